"""VideoBERT's visual vocabulary: hierarchical k-means over 1.5 s clip features (paper 3.2, 4.2).

The paper cuts a video into 1.5 s clips (30 frames at 20 fps), takes one S3D feature per clip and
quantises it by hierarchical k-means: ``d`` levels of ``k`` clusters (d=4, k=12 -> 20,736 visual
words). Here the clip features come from the feature store's per-second global features
(``second_features``: the action encoder at 1 FPS window centres), pooled to 1.5 s clips by
:func:`pool_clips`; the k-means of every tree node is scikit-learn's ``KMeans``.

The tree: level ``l`` (0 = root's children) has ``k**(l+1)`` centroids ``[k**(l+1), D]``; the
children of node ``n`` on level ``l`` are rows ``n*k .. n*k+k-1`` of level ``l+1``. A feature is
tokenised top-down -- at each level it goes to the nearest of the ``k`` children of the node it
reached (squared Euclidean distance, ties: the lower index) -- and its token is the index of the
leaf it ends in, ``0 .. k**d - 1`` (its base-``k`` digits are the path). Every node must own at
least one training clip: an empty cluster is an error (:class:`VisualVocabError`), at fit time and
when a file says so.

Saved as two files in a folder (no pickle): ``visual_vocab.safetensors`` (``centroids_<l>``
float32 and ``counts_<l>`` int64, the training clips per node) and ``visual_vocab.json``
(depth, branching, feature_dim, clip_seconds, seed, what it was fitted on, the digest).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from actbert.errors import ActBertError

VOCAB_WEIGHTS = "visual_vocab.safetensors"
VOCAB_JSON = "visual_vocab.json"
VOCAB_FORMAT = "actbert-videobert-visual-vocab"
CLIP_SECONDS = 1.5


class VisualVocabError(ActBertError):
    """A visual vocabulary that cannot be fitted, read or applied (names the file and the field)."""


# ----------------------------------------------------------------------------------------------
# 1.5 s clips from per-second features


def pool_clips(times: np.ndarray, features: np.ndarray, clip_seconds: float = CLIP_SECONDS,
               where: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Per-second features -> features of consecutive ``clip_seconds`` clips.

    ``times`` float64 ``[S]`` are window centres 1 s apart, so second ``s`` stands for
    ``[t_s - 0.5, t_s + 0.5)``; clip ``j`` spans ``[t0 + j*c, t0 + (j+1)*c)`` with ``t0 = times[0] - 0.5``.
    A clip's feature is the overlap-weighted mean of the seconds it overlaps (a 1.5 s clip from
    0 s: ``(f_0 + 0.5 f_1) / 1.5``). The last clip is kept when at least half of it is covered.
    Returns ``clip_times`` float64 ``[N, 2]`` and ``clip_features`` float32 ``[N, D]`` (``N`` may be 0).
    """
    times = np.asarray(times, np.float64)
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(times) != len(features):
        raise VisualVocabError(f"{where}: field 'second_features' must be [S, D] with one row per second_times entry, "
                               f"got {features.shape} for {times.shape}")
    if len(times) == 0:
        return np.zeros((0, 2), np.float64), np.zeros((0, features.shape[1]), np.float32)
    lo, hi = times - 0.5, times + 0.5
    t0, t_end = float(lo[0]), float(hi[-1])
    n = int(np.floor((t_end - t0) / clip_seconds + 0.5 + 1e-9))  # a partial last clip counts when >= half covered
    starts = t0 + clip_seconds * np.arange(n)
    ends = starts + clip_seconds
    overlap = np.clip(np.minimum(ends[:, None], hi[None, :]) - np.maximum(starts[:, None], lo[None, :]), 0.0, None)  # [N, S]
    weight = overlap.sum(axis=1, keepdims=True)
    keep = weight[:, 0] > 0
    pooled = (overlap[keep] @ features.astype(np.float64)) / weight[keep]
    return np.stack([starts[keep], ends[keep]], axis=1), pooled.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The tree


@dataclass
class VisualVocabulary:
    """A fitted hierarchical k-means tree (module docstring).

    ``centroids[l]`` float32 ``[k**(l+1), D]``, ``counts[l]`` int64 ``[k**(l+1)]`` training clips per node.
    """

    depth: int
    branching: int
    centroids: list[np.ndarray]
    counts: list[np.ndarray]
    clip_seconds: float = CLIP_SECONDS
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # what it was fitted on (free-form, saved in the JSON)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.validate(self.source)

    # -- shape and checks
    @property
    def feature_dim(self) -> int:
        return int(self.centroids[0].shape[1])

    @property
    def size(self) -> int:
        """Number of visual words, ``k**d``."""
        return int(self.branching ** self.depth)

    def validate(self, where: str) -> None:
        k, d = self.branching, self.depth
        if d < 1 or k < 2:
            raise VisualVocabError(f"{where}: field 'depth'/'branching' must be >= 1 / >= 2, got {d} / {k}")
        if len(self.centroids) != d or len(self.counts) != d:
            raise VisualVocabError(f"{where}: field 'centroids_*' has {len(self.centroids)} levels, depth is {d}")
        dim = int(self.centroids[0].shape[1]) if self.centroids[0].ndim == 2 else -1
        for level, (cent, count) in enumerate(zip(self.centroids, self.counts)):
            want = k ** (level + 1)
            if cent.ndim != 2 or cent.shape != (want, dim):
                raise VisualVocabError(f"{where}: field 'centroids_{level}' has shape {list(cent.shape)}, expected [{want}, {dim}]")
            if count.shape != (want,):
                raise VisualVocabError(f"{where}: field 'counts_{level}' has shape {list(count.shape)}, expected [{want}]")
            if not np.all(np.isfinite(cent)):
                raise VisualVocabError(f"{where}: field 'centroids_{level}' contains NaN or infinity")
            empty = np.nonzero(count <= 0)[0]
            if empty.size:
                raise VisualVocabError(
                    f"{where}: field 'counts_{level}': cluster {int(empty[0])} of level {level} is empty "
                    f"({empty.size} empty); fit with fewer levels or clusters per level"
                )
            if level:
                parent = self.counts[level - 1]
                if not np.array_equal(count.reshape(-1, k).sum(axis=1), parent):
                    raise VisualVocabError(f"{where}: field 'counts_{level}' does not add up to 'counts_{level - 1}' per node")

    def check_features(self, features: np.ndarray, where: str, field_name: str = "second_features") -> None:
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise VisualVocabError(
                f"{where}: field {field_name!r} has width {features.shape[-1] if features.ndim else '?'}, but the visual "
                f"vocabulary {self.source} was built for feature_dim={self.feature_dim}"
            )

    # -- tokenisation
    def tokenize(self, features: np.ndarray, where: str = "features", field_name: str = "second_features") -> np.ndarray:
        """float ``[N, D]`` -> int64 ``[N]`` leaf ids in ``[0, k**d)`` (top-down nearest centroid)."""
        x = np.asarray(features, np.float32)
        self.check_features(x, where, field_name)
        k = self.branching
        node = np.zeros(len(x), np.int64)
        for level, cent in enumerate(self.centroids):
            children = (node * k if level else np.zeros_like(node))[:, None] + np.arange(k)[None, :]  # [N, k]
            c = cent[children]  # [N, k, D]
            dist = ((x[:, None, :].astype(np.float64) - c.astype(np.float64)) ** 2).sum(-1)
            node = children[np.arange(len(x)), np.argmin(dist, axis=1)]
        return node

    def leaf_centroids(self) -> np.ndarray:
        """float32 ``[k**d, D]``: the centroid of each visual word."""
        return self.centroids[-1]

    # -- files
    def digest(self) -> str:
        """sha256 over the tree (what a tokenised store and a model record to check they match)."""
        h = hashlib.sha256(f"{self.depth},{self.branching},{self.clip_seconds}".encode())
        for cent in self.centroids:
            h.update(np.ascontiguousarray(cent, np.float32).tobytes())
        return h.hexdigest()[:16]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``visual_vocab.safetensors`` + ``visual_vocab.json`` into ``folder``."""
        import torch

        from actbert.utils.io import atomic_save_file, atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for level, (cent, count) in enumerate(zip(self.centroids, self.counts)):
            tensors[f"centroids_{level}"] = torch.from_numpy(np.ascontiguousarray(cent, np.float32))
            tensors[f"counts_{level}"] = torch.from_numpy(np.ascontiguousarray(count, np.int64))
        atomic_save_file(tensors, folder / VOCAB_WEIGHTS, metadata={"format": VOCAB_FORMAT})
        meta = {
            "format": VOCAB_FORMAT, "depth": self.depth, "branching": self.branching, "size": self.size,
            "feature_dim": self.feature_dim, "clip_seconds": self.clip_seconds, "seed": self.seed,
            "digest": self.digest(), "info": self.info,
        }
        atomic_write_json(folder / VOCAB_JSON, meta)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "VisualVocabulary":
        """Read a folder written by :meth:`save` (every problem names the file and the field)."""
        from actbert.models.pretrained import read_safetensors
        from actbert.utils.io import read_json

        folder = Path(folder)
        meta_path, weights_path = folder / VOCAB_JSON, folder / VOCAB_WEIGHTS
        if not meta_path.is_file():
            raise VisualVocabError(f"{meta_path}: not found (is {folder} a folder written by `actbert build-visual-vocab`?)")
        try:
            meta = read_json(meta_path, "visual vocabulary")
        except ValueError as exc:
            raise VisualVocabError(str(exc)) from exc
        if not isinstance(meta, dict) or meta.get("format") != VOCAB_FORMAT:
            raise VisualVocabError(f"{meta_path}: field 'format' must be {VOCAB_FORMAT!r}")
        for key in ("depth", "branching", "feature_dim", "clip_seconds"):
            if key not in meta:
                raise VisualVocabError(f"{meta_path}: missing field {key!r}")
        try:
            tensors, _ = read_safetensors(weights_path)
        except ActBertError as exc:
            raise VisualVocabError(str(exc)) from exc
        depth = int(meta["depth"])
        cents, counts = [], []
        for level in range(depth):
            for name in (f"centroids_{level}", f"counts_{level}"):
                if name not in tensors:
                    raise VisualVocabError(f"{weights_path}: missing field {name!r}")
            cents.append(tensors[f"centroids_{level}"].numpy().astype(np.float32))
            counts.append(tensors[f"counts_{level}"].numpy().astype(np.int64))
        vocab = cls(depth, int(meta["branching"]), cents, counts, float(meta["clip_seconds"]), int(meta.get("seed", 0)),
                    dict(meta.get("info", {})), source=str(weights_path))
        if vocab.feature_dim != int(meta["feature_dim"]):
            raise VisualVocabError(f"{meta_path}: field 'feature_dim' is {meta['feature_dim']}, the centroids are {vocab.feature_dim} wide")
        if "digest" in meta and meta["digest"] != vocab.digest():
            raise VisualVocabError(f"{meta_path}: field 'digest' {meta['digest']} does not match {weights_path} ({vocab.digest()})")
        return vocab


def fit_visual_vocabulary(features: np.ndarray, depth: int, branching: int, seed: int = 0, where: str = "features",
                          clip_seconds: float = CLIP_SECONDS, n_init: int = 3, max_iter: int = 100,
                          info: dict[str, Any] | None = None) -> VisualVocabulary:
    """Hierarchical k-means of ``features`` float ``[N, D]``: ``depth`` levels of ``branching`` clusters.

    Each node's members are clustered with scikit-learn ``KMeans(branching, n_init, random_state)``
    where the random state is derived from ``(seed, level, node)``, so the same inputs and seed give
    the same tree and token ids. A node with fewer than ``branching`` distinct members cannot be
    split into non-empty clusters: :class:`VisualVocabError` naming ``where`` and the node.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(features, np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise VisualVocabError(f"{where}: field 'second_features' gives no clips to fit a visual vocabulary on (shape {list(x.shape)})")
    if not np.all(np.isfinite(x)):
        raise VisualVocabError(f"{where}: field 'second_features' contains NaN or infinity")
    k = int(branching)
    centroids = [np.zeros((k ** (level + 1), x.shape[1]), np.float32) for level in range(depth)]
    counts = [np.zeros(k ** (level + 1), np.int64) for level in range(depth)]
    members = [np.arange(len(x))]  # members of each node of the previous level (root: all)
    for level in range(depth):
        next_members = []
        for node, idx in enumerate(members):
            path = f"{node} of level {level - 1}" if level else "root"
            distinct = len(np.unique(x[idx], axis=0)) if len(idx) else 0
            if distinct < k:
                raise VisualVocabError(
                    f"{where}: field 'second_features': tree node {path} has {len(idx)} clip(s) "
                    f"({distinct} distinct), too few for {k} non-empty clusters (empty cluster); "
                    f"use fewer levels (depth={depth}) or clusters (branching={k}), or more data"
                )
            state = int(np.random.SeedSequence([seed, level, node]).generate_state(1)[0] % (2**31 - 1))
            km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=state).fit(x[idx])
            labels = km.labels_
            # KMeans' cluster numbering is arbitrary; order children by their first member so that the
            # ids do not depend on it (and the tree is canonical for a given partition)
            first = [int(np.nonzero(labels == c)[0][0]) if np.any(labels == c) else len(idx) for c in range(k)]
            order = np.argsort(first, kind="stable")
            for slot, c in enumerate(order):
                child = idx[labels == c]
                if child.size == 0:
                    raise VisualVocabError(f"{where}: field 'second_features': k-means left cluster {slot} of tree node {path} "
                                           "empty; use fewer levels or clusters per level")
                centroids[level][node * k + slot] = x[child].mean(axis=0)
                counts[level][node * k + slot] = child.size
                next_members.append(child)
        members = next_members
    return VisualVocabulary(depth, k, centroids, counts, clip_seconds, seed, dict(info or {}), source=where)


# ----------------------------------------------------------------------------------------------
# Tokenised stores: one file per video, resumable


TOKENS_DIR = "tokens"


@dataclass
class VideoTokens:
    """One video's visual sentence: ``clip_times`` float64 ``[N, 2]`` and ``ids`` int64 ``[N]``."""

    clip_times: np.ndarray
    ids: np.ndarray


def _token_file(folder: Path, video_id: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in video_id)
    return folder / TOKENS_DIR / f"{safe}.safetensors"


def read_video_tokens(folder: str | os.PathLike, video_id: str, digest: str) -> VideoTokens | None:
    """The tokens :func:`tokenize_store` wrote for ``video_id`` with the vocabulary ``digest`` (None: absent or stale)."""
    from safetensors import safe_open

    path = _token_file(Path(folder), video_id)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as handle:
            meta = json.loads((handle.metadata() or {}).get("videobert_tokens", "{}"))
            if meta.get("digest") != digest or meta.get("video_id") != video_id:
                return None
            return VideoTokens(handle.get_tensor("clip_times").astype(np.float64), handle.get_tensor("ids").astype(np.int64))
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise VisualVocabError(f"{path}: not a readable token file ({exc})") from exc


def tokenize_video(vocab: VisualVocabulary, times: np.ndarray, features: np.ndarray, where: str) -> VideoTokens:
    """Pool one video's per-second features to clips and tokenise them."""
    clip_times, clip_feats = pool_clips(times, features, vocab.clip_seconds, where)
    if len(clip_feats):
        vocab.check_features(clip_feats, where)
    ids = vocab.tokenize(clip_feats, where) if len(clip_feats) else np.zeros(0, np.int64)
    return VideoTokens(clip_times, ids)


def tokenize_store(vocab: VisualVocabulary, folder: str | os.PathLike, videos: Iterable[tuple[str, Any]],
                   progress: bool = False) -> dict[str, int]:
    """Write ``folder/tokens/<video>.safetensors`` for each ``(video_id, get_seconds)``.

    ``get_seconds()`` returns an object with ``times`` and ``features`` (the store's per-second
    features). A file already written with this vocabulary is kept (resume after an interruption);
    each write is atomic. Returns ``{"written": n, "kept": m}``. Deterministic: the same vocabulary
    and store give byte-identical files.
    """
    import torch
    from tqdm import tqdm

    from actbert.utils.io import atomic_save_file

    folder = Path(folder)
    digest = vocab.digest()
    written = kept = 0
    for video_id, get_seconds in tqdm(list(videos), desc="tokenise", unit="video", disable=not progress):
        if read_video_tokens(folder, video_id, digest) is not None:
            kept += 1
            continue
        seconds = get_seconds()
        tokens = tokenize_video(vocab, seconds.times, seconds.features, f"video {video_id!r}")
        path = _token_file(folder, video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_file({"clip_times": torch.from_numpy(tokens.clip_times), "ids": torch.from_numpy(tokens.ids)}, path,
                         # one metadata key: safetensors does not keep the order of several, and the
                         # files are meant to be byte-identical across runs
                         metadata={"videobert_tokens": json.dumps({"digest": digest, "video_id": video_id}, sort_keys=True)})
        written += 1
    return {"written": written, "kept": kept}


# ----------------------------------------------------------------------------------------------
# `actbert build-visual-vocab`: fit on the pretraining split of a pretraining config, tokenise it


@dataclass
class ClipSample:
    """Fitted clips: features float32 ``[N, D]`` and, per clip, its video and time span."""

    features: np.ndarray
    video_ids: list[str]
    clip_times: np.ndarray  # float64 [N, 2]


def pretraining_store(cfg: Any, out: Path) -> tuple[Any, list[str], Any]:
    """The feature store, the split's video ids and the tokenizer of a pretraining config.

    With ``data.random`` the corpus is generated exactly as ``actbert pretrain`` generates it
    (same spec), into ``data.random_dir`` (default ``OUT/random_data``): pass the same
    ``data.random_dir`` to ``actbert pretrain`` so it trains on the corpus the vocabulary saw.
    """
    from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
    from actbert.data.store import FeatureStore
    from actbert.models.registry import resolve_architecture
    from actbert.text.tokenizer import load_tokenizer
    from actbert.utils.io import read_json

    d = cfg.data
    if d.random:
        r = d.random_corpus
        family = resolve_architecture(cfg.model.architecture)
        spec = RandomCorpusSpec(num_videos=r.num_videos, clips_per_video=r.clips_per_video, max_regions=max(1, d.max_regions_per_frame),
                                steps_per_video=r.steps_per_video, noise=r.noise, seed=r.seed, **family.random_corpus_dims(cfg.model))
        store_path, _ = write_random_corpus(Path(d.random_dir) if d.random_dir else out / "random_data", spec)
    else:
        if not d.store:
            raise VisualVocabError("config: field 'data.store' is required (or data.random=true)")
        store_path = Path(d.store)
    store = FeatureStore(store_path)
    ids = list(store.video_ids())
    if d.splits:
        splits = read_json(d.splits, "splits file")
        if not isinstance(splits, dict) or d.split not in splits:
            raise VisualVocabError(f"{d.splits}: field {d.split!r} (data.split) not found")
        wanted = set(str(v) for v in splits[d.split])
        ids = [v for v in ids if v in wanted]
    return store, ids, load_tokenizer(d.tokenizer)


def collect_clips(assembler: Any, video_ids: Sequence[str], clip_seconds: float, progress: bool = False) -> ClipSample:
    """Every 1.5 s clip of ``video_ids`` from the store's per-second features."""
    from tqdm import tqdm

    feats, owners, times = [], [], []
    for vid in tqdm(video_ids, desc="clips", unit="video", disable=not progress):
        seconds = assembler.second_features(vid)  # ClipsError naming the record file when absent
        clip_times, clip_feats = pool_clips(seconds.times, seconds.features, clip_seconds, f"{assembler.store_name}: video {vid!r}")
        feats.append(clip_feats)
        times.append(clip_times)
        owners += [vid] * len(clip_feats)
    if not feats:
        raise VisualVocabError(f"{assembler.store_name}: no videos in the pretraining split")
    return ClipSample(np.concatenate(feats), owners, np.concatenate(times))


def build_visual_vocab(cfg: Any, out: str | os.PathLike, depth: int | None = None, branching: int | None = None,
                       seed: int | None = None, videos_dir: str | os.PathLike | None = None, tokenize: bool = True,
                       progress: bool = True) -> dict[str, Any]:
    """Fit the vocabulary on ``cfg``'s pretraining split, save it to ``out``, tokenise the split.

    ``depth`` / ``branching`` default to the model section's ``vocab_depth`` / ``vocab_branching``.
    An existing vocabulary in ``out`` fitted with the same settings is reused (so an interrupted
    run resumes with the tokenisation). With ``videos_dir`` (``<id>.mp4`` files) the picture
    ``out/visual_words.png`` shows the most used visual words by the frames of their nearest clips.
    Returns the report also written to ``out/build_report.json``.
    """
    import time

    from actbert.data.clips import ClipAssembler
    from actbert.utils.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = cfg.model
    depth = int(depth if depth is not None else getattr(m, "vocab_depth", 4))
    branching = int(branching if branching is not None else getattr(m, "vocab_branching", 12))
    seed = int(seed if seed is not None else cfg.train.seed)
    clip_seconds = float(getattr(m, "clip_seconds", CLIP_SECONDS))
    began = time.perf_counter()
    store, video_ids, tokenizer = pretraining_store(cfg, out)
    assembler = ClipAssembler(store, tokenizer)
    sample = collect_clips(assembler, video_ids, clip_seconds, progress)
    where = f"{store.root}"
    vocab = None
    if (out / VOCAB_JSON).is_file():
        old = VisualVocabulary.load(out)
        if (old.depth, old.branching, old.seed, old.clip_seconds) == (depth, branching, seed, clip_seconds) and \
                old.info.get("clips") == len(sample.features) and old.feature_dim == sample.features.shape[1]:
            vocab = old
    fitted = vocab is None
    if vocab is None:
        vocab = fit_visual_vocabulary(sample.features, depth, branching, seed, where, clip_seconds,
                                      info={"store": str(store.root), "split": cfg.data.split if cfg.data.splits else None,
                                            "videos": len(video_ids), "clips": len(sample.features),
                                            "features": "store second_features pooled to clip_seconds (overlap-weighted mean)"})
        vocab.save(out)
    fit_s = time.perf_counter() - began
    counts = {"written": 0, "kept": 0}
    if tokenize:
        counts = tokenize_store(vocab, out, [(v, (lambda v=v: assembler.second_features(v))) for v in video_ids], progress)
    ids = vocab.tokenize(sample.features, where)
    used = np.bincount(ids, minlength=vocab.size)
    report = {**vocab_summary(vocab), "videos": len(video_ids), "fitted": fitted, "fit_seconds": round(fit_s, 2),
              "words_used": int((used > 0).sum()), "tokens": counts, "store": str(store.root), "out": str(out)}
    if videos_dir is not None:
        report["picture"] = str(visual_words_picture(vocab, sample, ids, Path(videos_dir), out / "visual_words.png"))
    atomic_write_json(out / "build_report.json", report)
    return report


def visual_words_picture(vocab: VisualVocabulary, sample: ClipSample, ids: np.ndarray, videos_dir: Path, path: Path,
                         words: int = 10, per_word: int = 6) -> Path:
    """The ``words`` most used visual words, each shown by the centre frames of its ``per_word``
    clips nearest to its centroid (the paper's way of judging a visual vocabulary, Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actbert.utils.plotting import save_png
    from actbert.video.decode import frames_at_fps

    used = np.bincount(ids, minlength=vocab.size)
    top = [int(w) for w in np.argsort(-used, kind="stable")[:words] if used[w] > 0]
    leaves = vocab.leaf_centroids()
    frames_of: dict[str, Any] = {}
    fig, axes = plt.subplots(len(top), per_word, figsize=(1.6 * per_word, 1.3 * len(top)), squeeze=False)
    for r, word in enumerate(top):
        members = np.nonzero(ids == word)[0]
        dist = ((sample.features[members] - leaves[word]) ** 2).sum(1)
        nearest = members[np.argsort(dist, kind="stable")[:per_word]]
        for c in range(per_word):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(nearest):
                continue
            j = int(nearest[c])
            vid = sample.video_ids[j]
            if vid not in frames_of:
                video = videos_dir / f"{vid}.mp4"
                frames_of[vid] = frames_at_fps(video, 1.0) if video.is_file() else None
            decoded = frames_of[vid]
            if decoded is None:
                continue
            centre = float(sample.clip_times[j].mean())
            f = int(np.argmin(np.abs(decoded.times + 0.5 - centre)))
            ax.imshow(decoded.frames[f])
            ax.set_title(f"{vid} {centre:.0f}s", fontsize=6)
        axes[r, 0].text(-0.1, 0.5, f"v{word}\n({int(used[word])})", transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle(f"visual words (d={vocab.depth}, k={vocab.branching}): the {per_word} clips nearest each centroid", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def vocab_summary(vocab: VisualVocabulary) -> dict[str, Any]:
    leaf = vocab.counts[-1]
    return {"size": vocab.size, "depth": vocab.depth, "branching": vocab.branching, "feature_dim": vocab.feature_dim,
            "clips": int(leaf.sum()), "leaf_clips_min": int(leaf.min()), "leaf_clips_max": int(leaf.max()),
            "digest": vocab.digest()}


def as_json(obj: Any) -> str:
    return json.dumps(obj, indent=1)


__all__ = [
    "CLIP_SECONDS",
    "VOCAB_JSON",
    "VOCAB_WEIGHTS",
    "ClipSample",
    "VideoTokens",
    "build_visual_vocab",
    "collect_clips",
    "VisualVocabError",
    "VisualVocabulary",
    "fit_visual_vocabulary",
    "pool_clips",
    "read_video_tokens",
    "tokenize_store",
    "tokenize_video",
    "vocab_summary",
]
