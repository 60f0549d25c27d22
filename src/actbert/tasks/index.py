"""A gallery index: a model's clip embeddings in faiss, saved beside the store and reused across queries.

Any model with the ``embeddings`` capability (``encode_text`` / ``encode_video``, one space) can
shortlist a gallery without scoring every (text, clip) pair: the clips are encoded once
(:func:`embed_clips`, ``[V, D]``), put in a faiss index, and each query is one ``encode_text`` and
one inner-product search. Two-stage retrieval (:mod:`actbert.tasks.retrieval`) reranks that
shortlist with the shared pair scorer.

Vectors are raw or L2-normalised as the model's own similarity is: a model class may set
``embeddings_normalized = True`` when it ranks by cosine; the default is the raw inner product,
which is what VLM's ``pair_scores`` is (``pooled_text . pooled_video``), so VLM's bi-encoder
ranking equals its pair scores.

Kinds: ``flat`` (``IndexFlatIP``: exact) and ``hnsw`` (``IndexHNSWFlat`` over inner product:
approximate, for large galleries).

On disk (a folder; default ``STORE/index/<architecture>``)::

    index.faiss      faiss's own format (faiss.write_index; no pickle)
    manifest.json    what the vectors are: architecture, config and weights digests, embedding
                     dim, normalisation, kind, the store (path, schema digest) and the clip list
                     (video id, start, end, name) in index order

:func:`load_index` refuses an index whose manifest does not match the model or the store asked
for, with an :class:`GalleryIndexError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.models.interface import device_of, require
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import batched
from actbert.tasks.heads import base_model
from actbert.utils.io import atomic_write_json, read_json
from actbert.utils.precision import autocast

INDEX_NAME = "index.faiss"
MANIFEST_NAME = "manifest.json"
FORMAT = 1
KINDS = ("flat", "hnsw")


class GalleryIndexError(ActBertError):
    """A gallery index that cannot be built, loaded or queried (names the file and the field)."""



@dataclass(frozen=True)
class GalleryClip:
    """One gallery entry: a span of a video (``None`` = from the start / to the end)."""

    video_id: str
    start: float | None = None
    end: float | None = None
    name: str = ""


def _faiss():
    import faiss  # imported late: only the index needs it

    return faiss


def _json_digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(vars(obj)) if hasattr(obj, "__dict__") else obj


def config_digest(model: Any) -> str:
    """Digest of the model's config fields (what ``config.json`` holds)."""
    return _json_digest(_as_dict(getattr(base_model(model), "config", {})))


@torch.no_grad()
def weights_digest(model: Any) -> str:
    """Digest of the model's weights: an index built before fine-tuning is refused after it."""
    h = hashlib.sha256()
    for name, tensor in sorted(base_model(model).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def store_digest(assembler: Any) -> str:
    """Digest of the store's schema (feature dims, vocabularies): another store's features are refused."""
    store = getattr(assembler, "store", None)
    schema = getattr(store, "schema", None)
    return _json_digest(_as_dict(schema)) if schema is not None else ""


def architecture_of(model: Any) -> str:
    inner = base_model(model)
    return str(getattr(getattr(inner, "config", None), "architecture", type(inner).__name__))


def normalized_for(model: Any) -> bool:
    """Whether ``model`` ranks by cosine (L2-normalised vectors) rather than the raw inner product."""
    return bool(getattr(model, "embeddings_normalized", False))


@torch.no_grad()
def _encode(model: Any, assembler: Any, items: Sequence[Item], video: bool, batch_size: int, dtype: str, use_regions: bool) -> np.ndarray:
    require(model, ["embeddings"], "index")
    model.eval()
    processor = processor_for(model, assembler)
    device = device_of(model)
    encode = model.encode_video if video else model.encode_text
    chunks = []
    for chunk in batched(list(items), batch_size):
        batch = processor.batch(chunk, use_regions=use_regions).to(device)
        with autocast(dtype, device.type):
            chunks.append(encode(batch).float().cpu().numpy())
    out = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros((0, 0), np.float32)
    if normalized_for(model) and len(out):
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out)


def embed_clips(model: Any, assembler: Any, clips: Sequence[Any], batch_size: int = 64, dtype: str = "fp32", use_regions: bool = True) -> np.ndarray:
    """``encode_video`` of every clip (rows: a video span, no text): float32 ``[V, D]``."""
    items = [Item(VideoRef(c.video_id, c.start, c.end)) for c in clips]
    return _encode(model, assembler, items, True, batch_size, dtype, use_regions)


def embed_texts(model: Any, assembler: Any, texts: Sequence[str], anchor: Any, batch_size: int = 64, dtype: str = "fp32", use_regions: bool = True) -> np.ndarray:
    """``encode_text`` of every text: float32 ``[T, D]``.

    The processor lays out (video, text) rows, so each text rides with ``anchor`` (a gallery clip);
    a model with the ``embeddings`` capability does not look at the video in ``encode_text``.
    """
    ref = VideoRef(anchor.video_id, anchor.start, anchor.end)
    return _encode(model, assembler, [Item(ref, t) for t in texts], False, batch_size, dtype, use_regions)


@dataclass
class GalleryIndex:
    """The faiss index over a gallery's clip embeddings, and its manifest."""

    index: Any  # faiss.Index, ntotal = len(clips)
    clips: list[GalleryClip]
    manifest: dict = field(default_factory=dict)
    path: Path | None = None  # the folder it was saved to / loaded from

    @property
    def where(self) -> str:
        return str(self.path / MANIFEST_NAME) if self.path else "gallery index (not saved)"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` clips per query: (similarities float32 ``[T, k']``, clip rows int64 ``[T, k']``),
        best first, ``k' = min(k, len(self))``."""
        if len(self) == 0:
            raise GalleryIndexError(f"{self.where}: field 'clips' is empty (the gallery has no clips to search)")
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        dim = int(self.index.d)
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise GalleryIndexError(f"{self.where}: field 'dim' is {dim}, the queries are {tuple(queries.shape)}")
        k = max(1, min(int(k), len(self)))
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = max(int(self.index.hnsw.efSearch), k)
        sims, ids = self.index.search(queries, k)
        return sims, ids.astype(np.int64)

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{INDEX_NAME}.tmp-{os.getpid()}"
        _faiss().write_index(self.index, str(tmp))
        os.replace(tmp, folder / INDEX_NAME)
        atomic_write_json(folder / MANIFEST_NAME, self.manifest)
        self.path = folder
        return folder


def _new_index(dim: int, kind: str, hnsw_m: int = 32):
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        return index
    raise GalleryIndexError(f"index: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")


def build_index(
    model: Any,
    assembler: Any,
    clips: Sequence[Any],
    kind: str = "flat",
    batch_size: int = 64,
    dtype: str = "fp32",
    use_regions: bool = True,
    vectors: np.ndarray | None = None,
) -> GalleryIndex:
    """Encode ``clips`` (anything with ``video_id``, ``start``, ``end``, ``name``) and index them.

    ``vectors`` (``[V, D]``): embeddings already computed by :func:`embed_clips` (not recomputed).
    """
    where = getattr(assembler, "store_name", "feature store")
    if not clips:
        raise GalleryIndexError(f"{where}: field 'clips' is empty (nothing to index)")
    if kind not in KINDS:
        raise GalleryIndexError(f"index: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if vectors is None:
        vectors = embed_clips(model, assembler, clips, batch_size, dtype, use_regions)
    vectors = np.ascontiguousarray(np.asarray(vectors, np.float32))
    index = _new_index(int(vectors.shape[1]), kind)
    index.add(vectors)
    entries = [GalleryClip(c.video_id, c.start, c.end, getattr(c, "name", "") or "") for c in clips]
    manifest = {
        "format": FORMAT,
        "architecture": architecture_of(model),
        "config_digest": config_digest(model),
        "weights_digest": weights_digest(model),
        "dim": int(vectors.shape[1]),
        "normalized": normalized_for(model),
        "metric": "inner_product",
        "kind": kind,
        "dtype": dtype,
        "use_regions": bool(use_regions),
        "store": str(where),
        "store_digest": store_digest(assembler),
        "clips": [dataclasses.asdict(c) for c in entries],
    }
    return GalleryIndex(index, entries, manifest)


def default_folder(assembler: Any, model: Any) -> Path:
    """``STORE/index/<architecture>``: beside the store the clips come from."""
    root = getattr(getattr(assembler, "store", None), "root", None)
    if root is None:
        raise GalleryIndexError(f"{getattr(assembler, 'store_name', 'feature store')}: field 'root' unknown; give the index folder")
    return Path(root) / "index" / architecture_of(model)


def load_index(folder: str | os.PathLike, model: Any | None = None, assembler: Any | None = None) -> GalleryIndex:
    """Read a saved index; with ``model`` / ``assembler``, refuse one built for another model or store."""
    folder = Path(folder)
    manifest_path, index_path = folder / MANIFEST_NAME, folder / INDEX_NAME
    for path in (manifest_path, index_path):
        if not path.is_file():
            raise GalleryIndexError(f"{path}: no such file (build the index first)")
    manifest = read_json(manifest_path, "gallery index manifest")
    if not isinstance(manifest, dict):
        raise GalleryIndexError(f"{manifest_path}: not a JSON object")
    for key in ("format", "architecture", "config_digest", "dim", "clips"):
        if key not in manifest:
            raise GalleryIndexError(f"{manifest_path}: field {key!r} is missing")
    if manifest["format"] != FORMAT:
        raise GalleryIndexError(f"{manifest_path}: field 'format' is {manifest['format']!r}, this reader reads {FORMAT}")
    clips = [GalleryClip(c["video_id"], c.get("start"), c.get("end"), c.get("name", "")) for c in manifest["clips"]]
    if not clips:
        raise GalleryIndexError(f"{manifest_path}: field 'clips' is empty (the gallery has no clips)")
    index = _faiss().read_index(str(index_path))
    if int(index.ntotal) != len(clips):
        raise GalleryIndexError(f"{index_path}: holds {index.ntotal} vectors, field 'clips' of {manifest_path} lists {len(clips)}")
    if int(index.d) != int(manifest["dim"]):
        raise GalleryIndexError(f"{manifest_path}: field 'dim' is {manifest['dim']}, {index_path} has dim {index.d}")
    if model is not None:
        expected = {"architecture": architecture_of(model), "config_digest": config_digest(model), "weights_digest": weights_digest(model)}
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise GalleryIndexError(f"{manifest_path}: field {key!r} is {manifest.get(key)!r}, the model has {value!r} (rebuild the index for this model)")
    if assembler is not None:
        digest = store_digest(assembler)
        if digest and manifest.get("store_digest") != digest:
            raise GalleryIndexError(
                f"{manifest_path}: field 'store_digest' is {manifest.get('store_digest')!r}, the store {getattr(assembler, 'store_name', '')} has {digest!r} "
                "(other feature dims or vocabularies)"
            )
    return GalleryIndex(index, clips, manifest, folder)


# ----------------------------------------------------------------------------- search


def store_gallery(assembler: Any) -> list[GalleryClip]:
    """Every clip of every video of the store (its ``clip_times`` spans), in store order."""
    store = assembler.store
    clips = []
    for video_id in store.video_ids():
        for start, end in np.asarray(assembler.video(video_id).clip_times, np.float64):
            clips.append(GalleryClip(video_id, float(start), float(end)))
    return clips


def open_index(model: Any, assembler: Any, folder: str | os.PathLike | None = None, kind: str = "flat", rebuild: bool = False,
               batch_size: int = 64, dtype: str = "fp32") -> GalleryIndex:
    """The store's gallery index in ``folder`` (default :func:`default_folder`): loaded when it is
    there (and checked against the model, the store and the store's clips), else built and saved."""
    folder = Path(folder) if folder is not None else default_folder(assembler, model)
    clips = store_gallery(assembler)
    if not clips:
        raise GalleryIndexError(f"{assembler.store_name}: field 'clips' is empty (the store has no videos to search)")
    if not rebuild and (folder / MANIFEST_NAME).is_file():
        loaded = load_index(folder, model, assembler)
        if loaded.clips != clips:
            raise GalleryIndexError(
                f"{folder / MANIFEST_NAME}: field 'clips' lists {len(loaded.clips)} clips, the store now has {len(clips)} or others (rebuild the index)"
            )
        return loaded
    built = build_index(model, assembler, clips, kind, batch_size, dtype)
    built.save(folder)
    return built


@dataclass(frozen=True)
class Hit:
    """One search result: a gallery clip and its score (higher = better)."""

    clip: GalleryClip
    score: float
    similarity: float  # the embedding similarity that shortlisted it


def search(model: Any, assembler: Any, gallery: GalleryIndex, query: str, k: int = 10, shortlist: int = 64, rerank: bool = True,
           batch_size: int = 64, dtype: str = "fp32") -> list[Hit]:
    """The top ``k`` clips for ``query``: the ``max(k, shortlist)`` nearest by the embeddings, reranked by
    the model's ``pair_scores`` (the shared pair scorer) when ``rerank`` (else by the similarity)."""
    from actbert.tasks.scoring import score_items  # the scorer imports processing; keep this module light

    if len(gallery) == 0:
        raise GalleryIndexError(f"{gallery.where}: field 'clips' is empty (the gallery has no clips to search)")
    q = embed_texts(model, assembler, [query], gallery.clips[0], batch_size, dtype)
    sims, ids = gallery.search(q, max(k, shortlist) if rerank else k)
    rows = [int(i) for i in ids[0] if i >= 0]
    sim_of = {int(i): float(s) for s, i in zip(sims[0], ids[0]) if i >= 0}
    if rerank:
        items = [Item(VideoRef(gallery.clips[r].video_id, gallery.clips[r].start, gallery.clips[r].end), query) for r in rows]
        scores = score_items(model, assembler, items, batch_size, dtype, True, "search", progress=False)
        order = np.argsort(-scores, kind="stable")
        hits = [Hit(gallery.clips[rows[j]], float(scores[j]), sim_of[rows[j]]) for j in order]
    else:
        hits = [Hit(gallery.clips[r], sim_of[r], sim_of[r]) for r in rows]
    return hits[:k]


__all__ = [
    "GalleryClip",
    "GalleryIndex",
    "GalleryIndexError",
    "Hit",
    "build_index",
    "config_digest",
    "default_folder",
    "embed_clips",
    "embed_texts",
    "load_index",
    "normalized_for",
    "open_index",
    "search",
    "store_gallery",
    "store_digest",
    "weights_digest",
]
