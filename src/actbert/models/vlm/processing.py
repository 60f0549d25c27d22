"""VLM's input processing: feature-store seconds + text -> MMPT's four tensors (and MTM labels).

A VLM row is MMPT's aligner output:

* ``caps [Lc]`` = ``[CLS] [SEP] w_1..w_n [SEP] [PAD]..`` with ``Lc = max_len - max_video_len`` and
  ``n <= max_len - max_video_len - 3`` word pieces; ``cmasks [Lc]`` is 1 up to and including the
  second ``[SEP]``.
* ``vfeats [max_video_len, D]`` = one global feature per second of video (the store's
  ``second_features``), zero-padded; ``vmasks`` marks the valid seconds. The video is always padded
  to ``max_video_len`` as upstream does, so positions have no gap; a longer span is thinned evenly
  (a longer list of frames is kept whole: ``unit_states`` encodes it in windows of ``max_video_len``).

Tasks hand :class:`~actbert.models.processing.Item` s to :meth:`VLMProcessor.batch`; the seconds of
an item are those whose window centre lies in its span (``ClipAssembler.second_features``), or the
listed 1 FPS frames. An item without text gets the dummy caption ``[CLS] [SEP] [SEP]`` (no words),
as VLM feeds a "dummy text token" for video-only passes.

Pretraining (:class:`Collator`): per example MMPT's ``MFMMLMAligner`` masking -- with probability
``mm_prob`` a masked modality example (then half whole-text, half whole-video), otherwise MFM-MLM
at ``mlm_probability`` / ``mfm_probability``; selected words become ``[MASK]`` (80%), a random id
(10%) or stay (10%), also in a whole-text row. :func:`mask_row` is that step on one row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from actbert.models.batch import TensorBatch
from actbert.errors import ActBertError
from actbert.models.processing import Item, Processor, VideoRef
from actbert.models.vlm.configuration import TEXT_LABEL_IGNORE

# per-row masking modes (the fixture's row_mode codes)
MFM_MLM, MMM_TEXT, MMM_VIDEO = 0, 1, 2


class VLMInputError(ActBertError):
    """Inputs that do not fit the VLM layout (names the input and field)."""


@dataclass
class VLMBatch(TensorBatch):
    """MMPT's batch: ``caps``/``cmasks`` ``[B, Lc]``, ``vfeats [B, Lv, D]``, ``vmasks [B, Lv]``;
    for pretraining ``video_label [B, Lv]`` bool (masked frames) and ``text_label [B, Lc]`` (original id
    at masked words, -100 elsewhere)."""

    caps: torch.Tensor
    cmasks: torch.Tensor
    vfeats: torch.Tensor
    vmasks: torch.Tensor
    video_label: torch.Tensor | None = None
    text_label: torch.Tensor | None = None
    row_mode: torch.Tensor | None = None  # [B] int: 0 MFM-MLM, 1 whole text, 2 whole video (pretraining)

    def select(self, rows: torch.Tensor) -> "VLMBatch":
        """The batch of the rows where ``rows [B]`` (bool) is true."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return VLMBatch(**{k: v[rows.to(v.device)] if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def __len__(self) -> int:
        return int(self.caps.shape[0])

    def num_tokens(self) -> int:
        return int(self.cmasks.sum() + self.vmasks.sum())




# --------------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------------


@dataclass
class VLMRow:
    """One unbatched row (numpy): ``caps``/``cmasks`` ``[Lc]``, ``vfeats [Lv, D]``, ``vmasks [Lv]``,
    and after masking ``video_label [Lv]`` / ``text_label [Lc]`` / ``row_mode``."""

    caps: np.ndarray
    cmasks: np.ndarray
    vfeats: np.ndarray
    vmasks: np.ndarray
    video_label: np.ndarray | None = None
    text_label: np.ndarray | None = None
    row_mode: int = MFM_MLM


def caption_row(words: Sequence[int], config: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] [SEP] words [SEP] [PAD]..`` ``[Lc]`` int64 and its mask (1 through the second ``[SEP]``);
    words beyond ``max_len - max_video_len - 3`` are cut."""
    lc = config.max_len - config.max_video_len
    words = [int(w) for w in words][: config.max_len - config.max_video_len - 3]
    ids = [config.cls_token_id, config.sep_token_id, *words, config.sep_token_id]
    caps = np.full(lc, config.pad_token_id, np.int64)
    caps[: len(ids)] = ids
    cmasks = np.zeros(lc, bool)
    cmasks[: len(ids)] = True
    return caps, cmasks


def video_row(features: np.ndarray, config: Any, where: str = "video", thin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-second features ``[S, D]`` -> ``vfeats [max_video_len, D]`` (zero-padded) and ``vmasks``;
    more than ``max_video_len`` seconds are thinned evenly, or with ``thin=False`` kept and padded to a
    multiple of ``max_video_len`` (windows that ``unit_states`` encodes one after another)."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[1] != config.input_dim:
        raise VLMInputError(f"{where}: field 'second_features' has shape {tuple(features.shape)}, the model reads "
                            f"[S, {config.input_dim}] (input_dim)")
    n = features.shape[0]
    slots = config.max_video_len
    if n > slots and thin:
        features = features[np.unique(np.linspace(0, n - 1, slots).round().astype(np.int64))]
    elif n > slots:
        slots = -(-n // slots) * slots
    vfeats = np.zeros((slots, config.input_dim), np.float32)
    vfeats[: len(features)] = features
    vmasks = np.zeros(slots, bool)
    vmasks[: len(features)] = True
    return vfeats, vmasks


def mask_row(row: VLMRow, rng: np.random.Generator, config: Any, special_ids: set[int], mode: int | None = None) -> VLMRow:
    """MMPT's per-example masking (module docstring) on one row; ``mode`` fixes the MMM choice.

    Text: a non-special word is selected with probability ``mlm_probability`` (1 in a whole-text row,
    0 in a whole-video row); a selected one becomes ``[MASK]`` (0.8), else a random id (0.5 of the rest,
    uniform over the vocabulary, as upstream), else stays. Video: a valid second is selected with
    ``mfm_probability`` (1 / 0). ``text_label`` = the original id at selected words, -100 elsewhere.
    """
    if mode is None:
        if rng.random() < config.mm_prob:
            mode = MMM_TEXT if rng.random() > 0.5 else MMM_VIDEO
        else:
            mode = MFM_MLM
    p_text = {MFM_MLM: config.mlm_probability, MMM_TEXT: 1.0, MMM_VIDEO: 0.0}[mode]
    p_video = {MFM_MLM: config.mfm_probability, MMM_TEXT: 0.0, MMM_VIDEO: 1.0}[mode]
    caps = row.caps.copy()
    eligible = ~np.isin(caps, list(special_ids))
    selected = eligible & (rng.random(caps.shape) < p_text)
    text_label = np.where(selected, caps, TEXT_LABEL_IGNORE).astype(np.int64)
    replaced = selected & (rng.random(caps.shape) < 0.8)
    randomised = selected & ~replaced & (rng.random(caps.shape) < 0.5)
    caps[replaced] = config.mask_token_id
    caps[randomised] = rng.integers(0, config.vocab_size, int(randomised.sum()))
    video_label = row.vmasks & (rng.random(row.vmasks.shape) < p_video)
    return dataclasses.replace(row, caps=caps, video_label=video_label, text_label=text_label, row_mode=mode)


def collate(rows: Sequence[VLMRow]) -> VLMBatch:
    """Rows of one layout -> :class:`VLMBatch` (labels when every row has them)."""
    labelled = all(r.video_label is not None for r in rows)
    slots = max(len(r.vmasks) for r in rows)  # rows of long frame lists (unit_states windows) set the width

    def pad(a: np.ndarray) -> np.ndarray:
        return a if len(a) == slots else np.concatenate([a, np.zeros((slots - len(a), *a.shape[1:]), a.dtype)])

    return VLMBatch(
        caps=torch.from_numpy(np.stack([r.caps for r in rows])),
        cmasks=torch.from_numpy(np.stack([r.cmasks for r in rows])),
        vfeats=torch.from_numpy(np.stack([pad(r.vfeats) for r in rows])),
        vmasks=torch.from_numpy(np.stack([pad(r.vmasks) for r in rows])),
        video_label=torch.from_numpy(np.stack([r.video_label for r in rows])) if labelled else None,
        text_label=torch.from_numpy(np.stack([r.text_label for r in rows])) if labelled else None,
        row_mode=torch.tensor([r.row_mode for r in rows], dtype=torch.int64) if labelled else None,
    )


class Collator:
    """Masked :class:`VLMRow` s -> :class:`VLMBatch` (the pretraining DataLoader's ``collate_fn``)."""

    def __call__(self, rows: Sequence[VLMRow]) -> VLMBatch:
        return collate(rows)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def require_seconds(assembler: Any, video_id: str) -> Any:
    """All per-second features of a video (``ClipAssembler.second_features``; its ``ClipsError`` names the
    record file and the field when the store has none)."""
    reader = getattr(assembler, "second_features", None)
    if reader is None:
        raise VLMInputError(f"{getattr(assembler, 'store_name', 'feature store')}: the assembler reads no per-second "
                            "features (field 'second_features'); VLM needs them")
    return reader(video_id)


class VLMProcessor(Processor):
    """Task items -> :class:`VLMBatch` over the store's per-second features (module docstring)."""

    def seconds(self, ref: VideoRef) -> np.ndarray:
        """``[S, D]``: the seconds of a video part (its 1 FPS frames, or the seconds centred in its span)."""
        all_seconds = require_seconds(self.assembler, ref.video_id)
        if len(all_seconds) == 0:
            raise VLMInputError(f"{self.assembler.store_name}: video {ref.video_id!r}: field 'second_features' is empty")
        times = all_seconds.times
        if ref.frames is not None:
            frame_times = np.asarray(self.assembler.frame_times(ref.video_id), np.float64)
            frames = np.clip(np.asarray(ref.frames, np.int64), 0, len(frame_times) - 1)
            # the second whose window centre is nearest the middle of the frame's second
            idx = np.abs(times[None, :] - (frame_times[frames][:, None] + 0.5)).argmin(axis=1)
            return all_seconds.features[idx]
        if ref.start is None and ref.end is None:
            return all_seconds.features
        s = -np.inf if ref.start is None else float(ref.start)
        e = np.inf if ref.end is None else float(ref.end)
        keep = (times >= s) & (times < e)
        if not keep.any():  # a span between two centres: the nearest second
            mid = (max(s, times[0]) + min(e, times[-1])) / 2.0
            keep = np.zeros(len(times), bool)
            keep[int(np.abs(times - mid).argmin())] = True
        return all_seconds.features[keep]

    def words(self, text: str | tuple[int, ...] | None) -> list[int]:
        if text is None:
            return []
        if isinstance(text, str):
            return self.assembler.encode(text)
        return [int(t) for t in text]

    def row(self, item: Item) -> VLMRow:
        caps, cmasks = caption_row(self.words(item.text), self.config)
        where = f"{self.assembler.store_name}: video {item.video.video_id!r}"
        # a frame list (segmentation) keeps one state per frame: never thinned, windows of max_video_len
        vfeats, vmasks = video_row(self.seconds(item.video), self.config, where, thin=item.video.frames is None)
        return VLMRow(caps, cmasks, vfeats, vmasks)

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> VLMBatch:
        # VLM has no region stream: use_regions changes nothing (one global feature per second)
        if not items:
            raise VLMInputError("VLMProcessor.batch: no items")
        return collate([self.row(item) for item in items])

    def mask_positions(self, batch: VLMBatch) -> torch.Tensor:
        """``[B, Lc]``: caption positions holding ``[MASK]`` (aligned with ``caps``, as ``masked_token_logits`` reads them)."""
        return batch.caps == self.config.mask_token_id

    @classmethod
    def pretraining_data(cls, source: Any) -> Any:
        """VLM's own samples (:class:`VLMPretrainDataset`) and :class:`Collator`."""
        from actbert.models.pretraining_data import PretrainingData

        dataset = VLMPretrainDataset(source)
        return PretrainingData(dataset, Collator(), dataset.failures)


# --------------------------------------------------------------------------------------------
# Pretraining samples
# --------------------------------------------------------------------------------------------


class VLMPretrainDataset(torch.utils.data.Dataset):
    """MMPT-style pretraining rows: a run of neighbouring narration sentences and the seconds they span.

    Item ``i`` (epoch ``e``) draws from ``default_rng([seed, e, i])``: the video ``video_ids[i % n]``,
    a text budget uniform in ``[sampled_min_len, sampled_max_len]`` word pieces (paper 5.2: 8..64; capped
    by the caption tensor), a centre sentence, neighbours added on a random side until the budget is
    met; the video is every second whose window centre lies in the run's ``[start, end)`` (the first
    ``max_video_len`` of them, as upstream truncates), then :func:`mask_row`.
    """

    sampled_min_len = 8
    sampled_max_len = 64

    def __init__(self, source: Any):
        from actbert.data.clips import ClipAssembler, ClipsError
        from actbert.data.corpus import load_narrations
        from actbert.data.samples import SpecialTokens

        self.config = source.model_config
        self.seed = int(source.seed)
        self.samples_per_video = int(source.data.samples_per_video)
        self.tokenizer = source.tokenizer
        self.special_ids = SpecialTokens.from_tokenizer(source.tokenizer).special_ids | {int(self.config.pad_token_id)}
        store_root = getattr(source.store, "root", "feature store")
        if not getattr(source.store.schema, "second_features", False):
            raise ClipsError(f"{store_root}/schema.json: field 'second_features' is false or absent: a store without "
                             "per-second features (VLM reads one feature per second; `actbert extract` on the store fills them)")
        self.assembler = ClipAssembler(source.store, source.tokenizer)
        narrations = load_narrations(source.narrations)
        ids = list(source.video_ids) if source.video_ids is not None else list(source.store.video_ids())
        self.failures: list[dict[str, str]] = []
        self.video_ids: list[str] = []
        self._sentences: dict[str, tuple[list[list[int]], np.ndarray]] = {}
        for vid in ids:
            try:
                if vid not in source.store:
                    raise VLMInputError(f"{store_root}: video {vid!r} is not in the feature store")
                nar = narrations.get(vid)
                if nar is None or not len(nar.text):
                    raise VLMInputError(f"{source.narrations}: video {vid!r} has no narration (field 'text')")
                if len(require_seconds(self.assembler, vid)) == 0:
                    raise VLMInputError(f"{store_root}: video {vid!r}: field 'second_features' is empty")
                order = np.argsort(nar.start, kind="stable")
                tokens = [self.tokenizer.encode(nar.text[k]) for k in order]
                times = np.stack([np.asarray(nar.start)[order], np.asarray(nar.end)[order]], axis=1).astype(np.float64)
                self._sentences[vid] = (tokens, times)
                self.video_ids.append(vid)
            except ActBertError as exc:
                self.failures.append({"video_id": vid, "error": str(exc)})
        if not self.video_ids:
            raise VLMInputError(f"{store_root}: none of the {len(ids)} videos is usable for VLM pretraining; first error: "
                                f"{self.failures[0]['error'] if self.failures else 'no videos'}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.video_ids) * self.samples_per_video

    def text_run(self, video_id: str, rng: np.random.Generator) -> tuple[list[int], float, float]:
        tokens, times = self._sentences[video_id]
        budget = min(int(rng.integers(self.sampled_min_len, self.sampled_max_len + 1)), self.config.max_caption_words)
        first = last = int(rng.integers(0, len(tokens)))
        total = len(tokens[first])
        while total < budget and (first > 0 or last < len(tokens) - 1):
            go_left = last == len(tokens) - 1 or (first > 0 and rng.random() < 0.5)
            if go_left:
                first -= 1
                total += len(tokens[first])
            else:
                last += 1
                total += len(tokens[last])
        words = [t for s in tokens[first : last + 1] for t in s][:budget]
        return words, float(times[first, 0]), float(times[last, 1])

    def __getitem__(self, index: int) -> VLMRow:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        video_id = self.video_ids[index % len(self.video_ids)]
        words, start, end = self.text_run(video_id, rng)
        seconds = require_seconds(self.assembler, video_id)
        keep = np.nonzero((seconds.times >= start) & (seconds.times < end))[0]
        if keep.size == 0:
            keep = np.array([int(np.abs(seconds.times - (start + end) / 2).argmin())])
        features = seconds.features[keep[: self.config.max_video_len]]
        caps, cmasks = caption_row(words, self.config)
        vfeats, vmasks = video_row(features, self.config, f"{self.assembler.store_name}: video {video_id!r}")
        return mask_row(VLMRow(caps, cmasks, vfeats, vmasks), rng, self.config, self.special_ids)


__all__ = [
    "Collator",
    "MFM_MLM",
    "MMM_TEXT",
    "MMM_VIDEO",
    "VLMBatch",
    "VLMInputError",
    "VLMPretrainDataset",
    "VLMProcessor",
    "VLMRow",
    "caption_row",
    "collate",
    "mask_row",
    "video_row",
]
