"""HERO's input processing: per-second frames + narration subtitles -> :class:`HeroBatch`.

**Frames.** A HERO "frame" is one second of video: the store's per-second global feature
(``second_features``: the action encoder on the window centred at each second), optionally
concatenated with the mean region feature of that second's 1 FPS frame (``frame_features:
action+region``; one config switch). **Subtitles** are the narration segments. Each second is
matched to at most one subtitle, the one whose time span has the largest IoU with the second
``[t - 0.5, t + 0.5)`` (HERO's ``unique_sub2frames``); seconds no subtitle covers stay in the
video (Temporal Transformer) without a subtitle row.

**Pretraining** (:meth:`HeroProcessor.pretraining_data`): one item = a window of at most
``window_seconds`` seconds of one video (HERO cut HowTo100M into 60-second clips), starting at a
narration segment drawn per (seed, epoch, index). A batch is one task drawn with
``task_ratios`` (HERO trains one task per mini-batch) and laid out as upstream's collates do:

* MLM: rows ``[CLS] + tokens``; each token masked with ``mlm_mask_prob`` (80 % [MASK], 10 %
  random word, 10 % kept; at least one per subtitle: its first token).
* MFM (NCE / MFFR): frames masked with ``mfm_mask_prob`` (at least one per video), zeroed.
* FOM: frames selected with ``fom_reorder_prob`` and shuffled among themselves (at least two per
  video, our choice so every video has a target).
* VSM: ``min(#subtitles with frames, vsm_query_per_video)`` subtitles per video become queries
  (``[CLS] + tokens``), the list padded by repeating the last; their text is removed from the video
  input; target ``(first frame, min(max(first + 1, last frame), Nv - 1))``.

Rows (``[SEP] + tokens`` outside MLM) are laid out in upstream's compact layout (batch.py).

**Tasks** (:meth:`HeroProcessor.batch`): an item's video part is its seconds, encoded without
subtitles (video-only input: rows of at most ``max_frm_seq_len`` frames with the text ``[SEP]``);
its text is the query (``[CLS] + tokens``). :meth:`HeroProcessor.text_rows` lays the text out
with the frames in one cross-modal row instead (fill-in-the-blank through the MLM head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from actbert.data.clips import ClipsError
from actbert.data.corpus import CorpusError, load_narrations
from actbert.models.hero.batch import HeroBatch
from actbert.models.hero.configuration import HeroBatchError, HeroConfig
from actbert.models.processing import Item, Processor, VideoRef

WINDOW_SECONDS = 60  # HERO's HowTo100M clips


@dataclass
class HeroVideo:
    """One video (window) as HERO sees it."""

    video_id: str
    frames: np.ndarray  # float32 [Nv, Dv]
    subtitles: list[list[int]] = field(default_factory=list)  # word-piece ids per subtitle (no specials)
    sub_frames: list[list[int]] = field(default_factory=list)  # frames matched to each subtitle (unique)
    epoch: int = 0
    index: int = 0


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int
    pad: int
    mask: int
    vocab_size: int
    word_range: tuple[int, int]  # [lo, hi): ids MLM's random replacement draws from

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "Specials":
        vocab = int(tokenizer.vocab_size)
        special = sorted(int(i) for i in getattr(tokenizer, "special_ids", ()) or (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id))
        low = [i for i in special if i < vocab // 2]
        high = [i for i in special if i >= vocab // 2]
        lo = max(low) + 1 if low else 0
        hi = min(high) if high else vocab
        return cls(int(tokenizer.cls_id), int(tokenizer.sep_id), int(tokenizer.pad_id), int(tokenizer.mask_id), vocab, (lo, hi))

    @classmethod
    def from_config(cls, config: HeroConfig) -> "Specials":
        ids = (config.cls_token_id, config.sep_token_id, config.pad_token_id, config.mask_token_id)
        return cls(*ids, config.vocab_size, (max(i for i in ids if i < config.vocab_size // 2) + 1 if any(
            i < config.vocab_size // 2 for i in ids) else 0, config.vocab_size))


# ----------------------------------------------------------------------------------------------
# Frames and subtitles


def match_seconds(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[list[int]]:
    """Seconds ``[Nv]`` (window centres) x subtitles ``[N]`` spans -> the seconds of each subtitle.

    A second covers ``[t - 0.5, t + 0.5)``; it goes to the overlapping subtitle with the largest
    IoU (the first on ties) and to no other (HERO's unique matching).
    """
    out: list[list[int]] = [[] for _ in range(len(starts))]
    for k, t in enumerate(np.asarray(times, np.float64)):
        lo, hi = t - 0.5, t + 0.5
        overlap = np.minimum(ends, hi) - np.maximum(starts, lo)
        union = np.maximum(ends, hi) - np.minimum(starts, lo)
        iou = np.where(overlap > 0, overlap / np.maximum(union, 1e-9), -1.0)
        if len(iou) and iou.max() > 0:
            out[int(np.argmax(iou))].append(k)
    return out


def frame_features(assembler_or_store: Any, video_id: str, config: HeroConfig, times: np.ndarray | None = None,
                   start: float | None = None, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(times ``[Nv]``, frames ``[Nv, Dv]``) of a video span from a :class:`~actbert.data.clips.ClipAssembler`."""
    seconds = assembler_or_store.second_features(video_id, start, end)
    feats, t = seconds.features, seconds.times
    if config.frame_features == "action+region":
        video = assembler_or_store.video(video_id)
        regions = _mean_regions(video.region_features, video.region_counts)
        idx = np.abs(np.asarray(video.frame_times)[None, :] - t[:, None]).argmin(axis=1) if len(t) else np.zeros(0, int)
        feats = np.concatenate([feats, regions[idx]], axis=1)
    return t, np.asarray(feats, np.float32)


def _mean_regions(region_features: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[F, R, Dr]`` + counts ``[F]`` -> mean over each frame's valid regions ``[F, Dr]`` (0 without regions)."""
    r = region_features.shape[1]
    valid = (np.arange(r)[None, :] < np.asarray(counts)[:, None]).astype(np.float32)
    total = (region_features * valid[..., None]).sum(axis=1)
    return (total / np.maximum(valid.sum(axis=1, keepdims=True), 1.0)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Collation (upstream's compact row layout)


def _rows_to_arrays(rows: list[tuple[list[int], np.ndarray, np.ndarray | None]], pad: int, dv: int) -> dict[str, np.ndarray]:
    """rows: (ids incl. the leading special, frame features [K_i, Dv], frame mask [K_i] or None)."""
    s = len(rows)
    ls = max([len(r[0]) for r in rows] + [1])
    k = max([len(r[1]) for r in rows] + [1])
    lf = max([max(len(r[1]), 1) + len(r[0]) for r in rows] + [1])
    ids = np.full((s, ls), pad, np.int64)
    feats = np.zeros((s, k, dv), np.float32)
    v_masks = np.zeros((s, k), bool)
    attn = np.zeros((s, lf), np.int64)
    gather = np.tile(np.arange(lf, dtype=np.int64), (s, 1))
    for i, (tok, fr, m) in enumerate(rows):
        ids[i, : len(tok)] = tok
        kv = len(fr)
        feats[i, :kv] = fr
        if m is not None:
            v_masks[i, :kv] = m
        nv = max(kv, 1)
        attn[i, :kv] = 1  # a frameless row keeps one masked dummy frame
        attn[i, nv : nv + len(tok)] = 1
        gather[i, :nv] = np.arange(nv)
        gather[i, nv : nv + len(tok)] = k + np.arange(len(tok))
    return dict(f_sub_input_ids=ids, f_sub_pos_ids=np.arange(ls)[None], f_v_feats=feats, f_v_pos_ids=np.arange(k)[None],
                f_attn_masks=attn, f_gather_index=gather, f_v_masks=v_masks)


def collate_videos(videos: Sequence[HeroVideo], first_id: int, specials: Specials,
                   texts: Sequence[Sequence[list[int] | None]] | None = None,
                   frame_masks: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """The video part of a batch: one row per subtitle (``first_id`` + tokens, or ``texts[v][s]``
    when given; None = no text), the whole videos for the Temporal Transformer."""
    dv = videos[0].frames.shape[1]
    nv = max(max(len(v.frames) for v in videos), 1)
    rows, sub_frames, sub_index, num_subs = [], [], [], []
    for vi, v in enumerate(videos):
        for si, (tokens, frames) in enumerate(zip(v.subtitles, v.sub_frames)):
            text = tokens if texts is None else texts[vi][si]
            ids = [first_id] + (list(text) if text is not None else [])
            m = None if frame_masks is None else frame_masks[vi][frames]
            rows.append((ids, v.frames[frames], m))
            sub_frames.append(frames)
            sub_index.append(si)
        num_subs.append(len(v.subtitles))
    arrays = _rows_to_arrays(rows, specials.pad, dv) if rows else _rows_to_arrays([([first_id], np.zeros((0, dv), np.float32), None)], specials.pad, dv)
    if not rows:  # keep the shapes valid; zero rows belong to no video
        arrays = {k: v[:0] for k, v in arrays.items()}
    k = arrays["f_v_feats"].shape[1]
    frames_arr = np.full((len(rows), k), -1, np.int64)
    for i, fr in enumerate(sub_frames):
        frames_arr[i, : len(fr)] = fr
    c_v = np.zeros((len(videos), nv, dv), np.float32)
    c_m = np.zeros((len(videos), nv), np.int64)
    for i, v in enumerate(videos):
        c_v[i, : len(v.frames)] = v.frames
        c_m[i, : len(v.frames)] = 1
    arrays.update(c_v_feats=c_v, c_attn_masks=c_m, num_subs=np.asarray(num_subs, np.int64), sub_frames=frames_arr,
                  sub_index=np.asarray(sub_index, np.int64))
    return arrays


def _to_batch(task: str, arrays: dict[str, Any], videos: Sequence[HeroVideo], keep_f_masks: bool = False) -> HeroBatch:
    tensors = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    if not keep_f_masks:
        tensors.pop("f_v_masks", None)
    return HeroBatch(task=task, video_ids=[v.video_id for v in videos], **tensors)


def _mask_tokens(tokens: list[int], rng: np.random.Generator, prob: float, sp: Specials) -> tuple[list[int], list[int]]:
    """BERT masking of one subtitle; at least its first token. Returns (input ids, labels with -1 = not masked)."""
    ids, labels = list(tokens), [-1] * len(tokens)
    for i, tok in enumerate(tokens):
        if rng.random() < prob:
            r = rng.random()
            ids[i] = sp.mask if r < 0.8 else (int(rng.integers(*sp.word_range)) if r < 0.9 else tok)
            labels[i] = tok
    if tokens and all(label == -1 for label in labels):
        ids[0], labels[0] = sp.mask, tokens[0]
    return ids, labels


def build_mlm(videos: Sequence[HeroVideo], rng: np.random.Generator, cfg: HeroConfig, sp: Specials) -> HeroBatch:
    texts, labels = [], []
    for v in videos:
        row_texts = []
        for tokens in v.subtitles:
            ids, lab = _mask_tokens(tokens, rng, cfg.mlm_mask_prob, sp)
            row_texts.append(ids)
            labels.append(lab)
        texts.append(row_texts)
    arrays = collate_videos(videos, sp.cls, sp, texts)
    s, lf = arrays["f_attn_masks"].shape
    tgt = np.zeros((s, lf), bool)
    flat = []
    row = 0
    for v in videos:
        for frames in v.sub_frames:
            lab = labels[row]
            nv = max(len(frames), 1)
            for j, value in enumerate(lab):
                if value != -1:
                    tgt[row, nv + 1 + j] = True  # after the frames and the leading [CLS]
                    flat.append(value)
            row += 1
    arrays.update(txt_mask_tgt=tgt, txt_labels=np.asarray(flat, np.int64))
    return _to_batch("mlm", arrays, videos)


def build_mfm(videos: Sequence[HeroVideo], rng: np.random.Generator, cfg: HeroConfig, sp: Specials, task: str) -> HeroBatch:
    masks = []
    for v in videos:
        m = rng.random(len(v.frames)) < cfg.mfm_mask_prob
        if len(v.frames) and not m.any():
            m[int(rng.integers(len(v.frames)))] = True
        masks.append(m)
    targets = np.concatenate([v.frames[m] for v, m in zip(videos, masks)], axis=0)
    masked = [HeroVideo(v.video_id, np.where(m[:, None], 0.0, v.frames).astype(np.float32), v.subtitles, v.sub_frames)
              for v, m in zip(videos, masks)]
    arrays = collate_videos(masked, sp.sep, sp, frame_masks=masks)
    c_masks = np.zeros(arrays["c_attn_masks"].shape, bool)
    for i, m in enumerate(masks):
        c_masks[i, : len(m)] = m
    arrays.update(c_v_masks=c_masks, feat_targets=targets.astype(np.float32))
    return _to_batch(task, arrays, masked, keep_f_masks=True)


def random_reorder(n: int, rng: np.random.Generator, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """(orders [n]: frame i goes to orders[i]; targets [n]: original index of the frame now at j, -1 = none).
    Frames selected with ``prob`` are shuffled among themselves; at least two are selected (n >= 2)."""
    selected = np.nonzero(rng.random(n) < prob)[0]
    if len(selected) < 2 and n >= 2:
        selected = np.sort(rng.choice(n, size=2, replace=False))
    shuffled = selected[rng.permutation(len(selected))]
    orders, targets = np.arange(n), np.full(n, -1)
    orders[selected] = shuffled
    targets[shuffled] = selected
    return orders, targets


def build_fom(videos: Sequence[HeroVideo], rng: np.random.Generator, cfg: HeroConfig, sp: Specials) -> HeroBatch:
    arrays = collate_videos(videos, sp.sep, sp)
    b, nv = arrays["c_attn_masks"].shape
    orders = np.tile(np.arange(nv), (b, 1))
    targets = np.full((b, nv), -1)
    for i, v in enumerate(videos):
        o, t = random_reorder(len(v.frames), rng, cfg.fom_reorder_prob)
        orders[i, : len(o)], targets[i, : len(t)] = o, t
    arrays.update(shuffled_orders=orders.astype(np.int64), fom_targets=targets.astype(np.int64))
    return _to_batch("fom", arrays, videos)


def build_vsm(videos: Sequence[HeroVideo], rng: np.random.Generator, cfg: HeroConfig, sp: Specials) -> HeroBatch:
    texts, queries, q_vidx, targets = [], [], [], []
    for vi, v in enumerate(videos):
        candidates = [s for s, fr in enumerate(v.sub_frames) if fr and v.subtitles[s]]
        chosen = [int(c) for c in rng.choice(candidates, size=min(len(candidates), cfg.vsm_query_per_video), replace=False)] \
            if candidates else []
        row_texts: list[list[int] | None] = [None if s in chosen else t for s, t in enumerate(v.subtitles)]
        texts.append(row_texts)
        if chosen:
            chosen = chosen + [chosen[-1]] * (cfg.vsm_query_per_video - len(chosen))
        for s in chosen:
            frames = v.sub_frames[s]
            st = frames[0]
            ed = min(max(st + 1, frames[-1]), len(v.frames) - 1)
            queries.append([sp.cls] + list(v.subtitles[s]))
            q_vidx.append(vi)
            targets.append((st, ed))
    arrays = collate_videos(videos, sp.sep, sp, texts)
    lq = max([len(q) for q in queries] + [1])
    ids = np.full((len(queries), lq), sp.pad, np.int64)
    mask = np.zeros((len(queries), lq), np.int64)
    for i, q in enumerate(queries):
        ids[i, : len(q)], mask[i, : len(q)] = q, 1
    arrays.update(query_input_ids=ids, query_pos_ids=np.arange(lq)[None], query_attn_masks=mask,
                  q_vidx=np.asarray(q_vidx, np.int64), vsm_targets=np.asarray(targets, np.int64).reshape(-1, 2))
    return _to_batch("vsm", arrays, videos)


def build_task_batch(task: str, videos: Sequence[HeroVideo], rng: np.random.Generator, cfg: HeroConfig, sp: Specials) -> HeroBatch:
    if task == "mlm":
        return build_mlm(videos, rng, cfg, sp)
    if task in ("mfm_nce", "mffr"):
        return build_mfm(videos, rng, cfg, sp, task)
    if task == "fom":
        return build_fom(videos, rng, cfg, sp)
    if task == "vsm":
        return build_vsm(videos, rng, cfg, sp)
    raise HeroBatchError(f"task {task!r} has no batch builder")


# ----------------------------------------------------------------------------------------------
# Pretraining data


class HeroPretrainDataset(torch.utils.data.Dataset):
    """Windows of narrated videos (module docstring); item ``i`` of epoch ``e`` depends only on (seed, e, i)."""

    def __init__(self, videos: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, list[list[int]]]], config: HeroConfig,
                 seed: int, samples_per_video: int, window_seconds: int):
        self.videos = videos  # (video_id, times [Nv], frames [Nv, Dv], seg starts/ends [N, 2], tokens per segment)
        self.config = config
        self.seed = int(seed)
        self.samples_per_video = max(1, int(samples_per_video))
        self.window = int(min(window_seconds, config.max_clip_len, config.max_frames))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos) * self.samples_per_video

    def __getitem__(self, index: int) -> HeroVideo:
        video_id, times, frames, spans, tokens = self.videos[index // self.samples_per_video]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        # a window of seconds starting at a narration segment (so it holds at least one subtitle)
        seg = int(rng.integers(len(spans)))
        first = int(np.searchsorted(times, spans[seg, 0] - 0.5))
        first = max(0, min(first, len(times) - self.window)) if len(times) > self.window else 0
        keep = slice(first, first + self.window)
        t = times[keep]
        lo, hi = (t[0] - 0.5, t[-1] + 0.5) if len(t) else (0.0, 0.0)
        inside = [i for i in range(len(spans)) if spans[i, 0] < hi and spans[i, 1] > lo and tokens[i]]
        matched = match_seconds(t, spans[inside, 0], spans[inside, 1]) if inside else []
        return HeroVideo(video_id, frames[keep], [tokens[i] for i in inside], matched, self.epoch, int(index))


@dataclass
class HeroPretrainCollator:
    """Videos -> the batch of one task drawn with ``task_ratios`` from (seed, epoch, the batch's indices)."""

    config: HeroConfig
    specials: Specials
    seed: int = 0

    def __call__(self, videos: Sequence[HeroVideo]) -> HeroBatch:
        if not videos:
            raise HeroBatchError("cannot collate an empty list of videos")
        rng = np.random.default_rng([self.seed, videos[0].epoch, *[v.index for v in videos], 12])
        tasks = self.config.tasks
        weights = np.asarray([self.config.task_ratios[t] for t in tasks], np.float64)
        task = tasks[int(rng.choice(len(tasks), p=weights / weights.sum()))]
        return build_task_batch(task, videos, rng, self.config, self.specials)


class _StoreSeconds:
    """``second_features`` / ``video`` of a FeatureStore with ClipAssembler's checks and errors."""

    def __init__(self, store: Any, tokenizer: Any):
        from actbert.data.clips import ClipAssembler

        self.assembler = ClipAssembler(store, tokenizer)

    def second_features(self, video_id: str, start: float | None = None, end: float | None = None):
        return self.assembler.second_features(video_id, start, end)

    def video(self, video_id: str):
        return self.assembler.video(video_id)


# ----------------------------------------------------------------------------------------------
# The processor


class HeroProcessor(Processor):
    """Task items -> :class:`HeroBatch` (module docstring), and HERO's pretraining data."""

    def __init__(self, assembler: Any, config: HeroConfig):
        super().__init__(assembler, config)
        self.specials = Specials.from_tokenizer(assembler.tokenizer)

    @classmethod
    def pretraining_data(cls, source: Any) -> Any:
        from actbert.models.pretraining_data import PretrainingData

        cfg: HeroConfig = source.model_config
        d = source.data
        specials = Specials.from_tokenizer(source.tokenizer)
        narrations = load_narrations(source.narrations)
        reader = _StoreSeconds(source.store, source.tokenizer)
        ids = list(source.store.video_ids() if source.video_ids is None else source.video_ids)
        videos, failures = [], []
        max_tokens = max(1, int(d.max_text_len) - 1)
        for video_id in ids:
            try:
                narration = narrations.get(video_id)
                if narration is None or not len(narration.text):
                    raise CorpusError(f"{source.narrations}: video {video_id!r}: field 'text' has no narration segments")
                times, frames = frame_features(reader, video_id, cfg)
                if len(times) == 0:
                    raise ClipsError(f"{source.store.path_for(video_id)}: field 'second_features' is empty")
                tokens = [reader.assembler.encode(t)[:max_tokens] for t in narration.text]
                spans = np.stack([narration.start, narration.end], axis=1)
                videos.append((video_id, times, frames, spans, tokens))
            except (ClipsError, CorpusError) as exc:
                failures.append({"video_id": video_id, "error": str(exc)})
        if not videos:
            first = failures[0]["error"] if failures else "no videos"
            raise CorpusError(f"{source.store.root}: none of the {len(ids)} videos is usable for HERO; first error: {first}")
        dataset = HeroPretrainDataset(videos, cfg, source.seed, d.samples_per_video, WINDOW_SECONDS)
        return PretrainingData(dataset, HeroPretrainCollator(cfg, specials, source.seed), failures)

    # -- tasks

    def _frames(self, ref: VideoRef) -> np.ndarray:
        if ref.frames is not None:
            t_all, f_all = frame_features(self.assembler, ref.video_id, self.config)
            idx = np.asarray(ref.frames, np.int64)
            # 1 FPS frame k <-> the second whose window centre is nearest frame k's time
            frame_times = self.assembler.frame_times(ref.video_id)
            centres = frame_times[np.clip(idx, 0, len(frame_times) - 1)]
            pick = np.abs(t_all[None, :] - centres[:, None]).argmin(axis=1) if len(t_all) else idx[:0]
            feats = f_all[pick]
        else:
            _, feats = frame_features(self.assembler, ref.video_id, self.config, start=ref.start, end=ref.end)
            if len(feats) == 0:  # a span shorter than a second: the nearest second
                t_all, f_all = frame_features(self.assembler, ref.video_id, self.config)
                mid = ((ref.start or 0.0) + (ref.end if ref.end is not None else (ref.start or 0.0))) / 2.0
                feats = f_all[[int(np.abs(t_all - mid).argmin())]]
        limit = min(self.config.max_frames, self.config.max_clip_len)
        if len(feats) > limit:
            feats = feats[np.unique(np.linspace(0, len(feats) - 1, limit).round().astype(int))]
        return feats

    def _tokens(self, text: Any) -> list[int]:
        if text is None:
            return []
        ids = self.assembler.encode(text) if isinstance(text, str) else [int(i) for i in text]
        return ids[: max(1, min(self.config.query_max_positions, self.config.max_position_embeddings) - 1)]

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> HeroBatch:
        """Video-only rows (chunks of ``max_frm_seq_len`` frames, text ``[SEP]``) + the item text as query."""
        sp, step = self.specials, self.config.max_frm_seq_len
        videos = []
        for it in items:
            frames = self._frames(it.video)
            chunks = [list(range(i, min(i + step, len(frames)))) for i in range(0, len(frames), step)]
            videos.append(HeroVideo(it.video.video_id, frames, [[] for _ in chunks], chunks))
        arrays = collate_videos(videos, sp.sep, sp)
        queries = [[sp.cls] + self._tokens(it.text) for it in items]
        lq = max(len(q) for q in queries)
        ids = np.full((len(items), lq), sp.pad, np.int64)
        mask = np.zeros((len(items), lq), np.int64)
        for i, q in enumerate(queries):
            ids[i, : len(q)], mask[i, : len(q)] = q, 1
        arrays.update(query_input_ids=ids, query_pos_ids=np.arange(lq)[None], query_attn_masks=mask,
                      q_vidx=np.arange(len(items), dtype=np.int64))
        return _to_batch("repr", arrays, videos)

    def mask_positions(self, batch: HeroBatch) -> torch.Tensor:
        """``[B, Lq]``: the query positions holding [MASK] (the query layout is ``[CLS] + text``)."""
        return batch.query_input_ids == self.specials.mask


__all__ = [
    "HeroPretrainCollator",
    "HeroPretrainDataset",
    "HeroProcessor",
    "HeroVideo",
    "Specials",
    "build_task_batch",
    "collate_videos",
    "frame_features",
    "match_seconds",
    "random_reorder",
]
