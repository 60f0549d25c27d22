"""VideoBERT's input processing: visual sentences, the three pretraining regimes, task items.

One sequence per row, over the joint vocabulary (configuration.py)::

    text-video   [CLS] w1 .. wN [>] v1 .. vM [SEP]     (paper 3.2: "[CLS] orange chicken with [MASK] sauce [>] v01 [MASK] v08 v72 [SEP]")
    text only    [CLS] w1 .. wN [SEP]
    video only   [CLS] [>] v1 .. vM [SEP]

Token type 0 for ``[CLS]`` and the words, 1 from ``[>]`` on; positions run 0..L-1. ``v_j`` are
visual words: the 1.5 s clips of the video (``visual_vocab.pool_clips`` over the store's
per-second features) tokenised by the visual vocabulary.

Pretraining (:class:`VideoBertPretrainDataset`, the family's ``pretraining_data``): per sample a
regime is drawn (``regime_probs``); text-video takes 1..``max_sentences`` neighbouring ASR
sentences and the visual words whose clip centre falls in their time span, subsampled at a random
rate of 1..``max_subsample``; with ``data.masking.negative_probability`` the text is another
video's (alignment label 0, the paper's random negatives). Words are masked by BERT's rule at
``data.masking.mlm_probability``, visual words at ``visual_mask_probability`` (80% ``[MASK]``, 10% a
random visual word, 10% kept). Every random choice of index ``i`` in epoch ``e`` comes from
``default_rng([seed, e, i])``.

Tasks (:class:`VideoBertProcessor`): a span item gets the visual words whose clip centre lies in
the span (none: the clip nearest its centre), a frames item the words of the clips covering its
frames (``unit_index`` maps each frame to its word's position); text-less items use the feature
template of paper 4.6 (``feature_template``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch

from actbert.models.batch import TensorBatch
from actbert.data.masking import IGNORE_INDEX, mask_tokens
from actbert.data.samples import SpecialTokens
from actbert.errors import ActBertError
from actbert.models.processing import Item, Processor, VideoRef
from actbert.models.videobert.configuration import REGIMES, VideoBertConfig
from actbert.models.videobert.visual_vocab import VideoTokens, VisualVocabulary, read_video_tokens, tokenize_video

REGIME_ID = {name: i for i, name in enumerate(REGIMES)}
NO_ALIGN = -1.0  # rows without an alignment label (text-only, video-only)


class VideoBertDataError(ActBertError):
    """A video or config that cannot give VideoBERT inputs (names the file / video and the field)."""


@dataclass
class VideoBertBatch(TensorBatch):
    """Padded rows; ``L`` sequence length, ``W`` units (task batches)."""

    input_ids: torch.Tensor  # [B, L] long, joint vocabulary
    token_type_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] bool, True = real token
    mlm_labels: torch.Tensor | None = None  # [B, L] long joint ids, -100 = no target
    regime: torch.Tensor | None = None  # [B] long, index into REGIMES
    align_labels: torch.Tensor | None = None  # [B] float, 1 aligned / 0 random negative / -1 none
    unit_index: torch.Tensor | None = None  # [B, W] long sequence position of each unit, -1 = padding
    video_ids: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass
class Row:
    """One unpadded row (numpy)."""

    input_ids: np.ndarray  # int64 [L]
    token_type_ids: np.ndarray  # int64 [L]
    mlm_labels: np.ndarray  # int64 [L]
    regime: int
    align_label: float
    video_id: str
    unit_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [W]


def layout(config: VideoBertConfig, text: Sequence[int] | None, visual: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``[CLS] text [>] visual [SEP]`` (text-only: no ``[>]``; video-only: no words) over joint ids.

    ``visual`` are visual-word indices (0-based). Returns ids, token types (``[B, L]`` rows) and the
    position of the first visual word (-1 without video).
    """
    ids, types = [config.cls_token_id], [0]
    if text is not None:
        ids += [int(t) for t in text]
        types += [0] * len(text)
    first = -1
    if visual is not None:
        ids.append(config.next_token_id)
        types.append(1)
        first = len(ids)
        ids += [config.visual_offset + int(v) for v in visual]
        types += [1] * len(visual)
    ids.append(config.sep_token_id)
    types.append(1 if visual is not None else 0)
    return np.asarray(ids, np.int64), np.asarray(types, np.int64), first


def mask_visual(ids: np.ndarray, eligible: np.ndarray, rng: np.random.Generator, config: VideoBertConfig) -> tuple[np.ndarray, np.ndarray]:
    """BERT's rule on the visual words at ``eligible`` positions -> (new ids, labels), joint ids ``[L]``."""
    chosen = eligible & (rng.random(len(ids)) < config.visual_mask_probability)
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(np.int64)
    how = rng.random(len(ids))
    out = ids.copy()
    out[chosen & (how < 0.8)] = config.mask_token_id
    swap = chosen & (how >= 0.8) & (how < 0.9)
    out[swap] = config.visual_offset + rng.integers(0, config.visual_vocab_size, int(swap.sum()))
    return out, labels


def collate_rows(rows: Sequence[Row], pad_id: int) -> VideoBertBatch:
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    length = max(len(r.input_ids) for r in rows)
    width = max(len(r.unit_index) for r in rows)
    b = len(rows)
    ids = np.full((b, length), pad_id, np.int64)
    types = np.zeros((b, length), np.int64)
    labels = np.full((b, length), IGNORE_INDEX, np.int64)
    keep = np.zeros((b, length), bool)
    units = np.full((b, width), -1, np.int64)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], types[i, :n], labels[i, :n], keep[i, :n] = r.input_ids, r.token_type_ids, r.mlm_labels, True
        units[i, : len(r.unit_index)] = r.unit_index
    return VideoBertBatch(
        input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types), attention_mask=torch.from_numpy(keep),
        mlm_labels=torch.from_numpy(labels), regime=torch.tensor([r.regime for r in rows], dtype=torch.long),
        align_labels=torch.tensor([r.align_label for r in rows], dtype=torch.float32),
        unit_index=torch.from_numpy(units) if width else None, video_ids=[r.video_id for r in rows],
    )


@dataclass
class Collator:
    pad_id: int

    def __call__(self, rows: Sequence[Row]) -> VideoBertBatch:
        return collate_rows(rows, self.pad_id)


@lru_cache(maxsize=8)
def load_vocabulary(path: str) -> VisualVocabulary:
    return VisualVocabulary.load(path)


def vocabulary_of(config: VideoBertConfig, where: str = "model") -> VisualVocabulary:
    """The visual vocabulary ``config.visual_vocab`` names, checked against the config's sizes."""
    if not config.visual_vocab:
        raise VideoBertDataError(f"{where}: field 'visual_vocab' is not set; build one with `actbert build-visual-vocab` "
                                 "and pass --set model.visual_vocab=FOLDER")
    vocab = load_vocabulary(str(config.visual_vocab))
    if vocab.size != config.visual_vocab_size or vocab.feature_dim != config.feature_dim:
        raise VideoBertDataError(
            f"{vocab.source}: has {vocab.size} words over {vocab.feature_dim}-wide features, but {where} fields "
            f"'visual_vocab_size'/'feature_dim' say {config.visual_vocab_size}/{config.feature_dim}"
        )
    return vocab


def second_features_of(assembler: Any, video_id: str) -> Any:
    """The store's per-second features of a whole video (``ClipAssembler.second_features``)."""
    reader = getattr(assembler, "second_features", None)
    if reader is None:
        raise VideoBertDataError(f"{getattr(assembler, 'store_name', 'feature store')}: this reader has no "
                                 "per-second features (field 'second_features'); VideoBERT needs them")
    return reader(video_id)


class VisualSentences:
    """Per-video visual words (tokens written by ``build-visual-vocab`` when present, else computed), cached."""

    def __init__(self, assembler: Any, vocab: VisualVocabulary, vocab_folder: str | None):
        self.assembler = assembler
        self.vocab = vocab
        self.folder = vocab_folder
        self.digest = vocab.digest()
        self._cache: dict[str, VideoTokens] = {}

    def __call__(self, video_id: str) -> VideoTokens:
        tokens = self._cache.get(video_id)
        if tokens is None:
            tokens = read_video_tokens(self.folder, video_id, self.digest) if self.folder else None
            if tokens is None:
                seconds = second_features_of(self.assembler, video_id)
                where = f"{getattr(self.assembler, 'store_name', 'feature store')}: video {video_id!r}"
                tokens = tokenize_video(self.vocab, seconds.times, seconds.features, where)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[video_id] = tokens
        return tokens


def span_indices(clip_times: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Clips whose centre lies in ``[start, end)`` (both None: all); none -> the clip nearest the span centre."""
    if len(clip_times) == 0:
        return np.zeros(0, np.int64)
    if start is None and end is None:
        return np.arange(len(clip_times))
    centres = clip_times.mean(axis=1)
    s = -np.inf if start is None else float(start)
    e = np.inf if end is None else float(end)
    idx = np.nonzero((centres >= s) & (centres < e))[0]
    if idx.size == 0:
        mid = (max(s, float(clip_times[0, 0])) + min(e, float(clip_times[-1, 1]))) / 2.0
        idx = np.array([int(np.argmin(np.abs(centres - mid)))])
    return idx.astype(np.int64)


def thin(idx: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced entries of ``idx`` (in order)."""
    if len(idx) <= limit:
        return idx
    return idx[np.unique(np.linspace(0, len(idx) - 1, limit).round().astype(int))]


class VideoBertProcessor(Processor):
    """Task items -> :class:`VideoBertBatch` (module docstring)."""

    def __init__(self, assembler: Any, config: VideoBertConfig):
        super().__init__(assembler, config)
        self.vocab = vocabulary_of(config, "model config")
        self.sentences = VisualSentences(assembler, self.vocab, config.visual_vocab)
        self.notes: list[str] = []
        template = config.feature_template
        self.template = assembler.encode(template) if template else None

    @classmethod
    def pretraining_data(cls, source: Any) -> Any:
        from actbert.models.pretraining_data import PretrainingData

        dataset = VideoBertPretrainDataset(source)
        return PretrainingData(dataset, Collator(int(source.tokenizer.pad_id)), dataset.failures)

    def visual(self, ref: VideoRef) -> tuple[np.ndarray, np.ndarray]:
        """Visual-word indices of ``ref`` and, per unit, the index (into them) of its word."""
        tokens = self.sentences(ref.video_id)
        if len(tokens.ids) == 0:
            raise VideoBertDataError(f"{self.assembler.store_name}: video {ref.video_id!r}: field 'second_features' "
                                     "gives no 1.5 s clip")
        if ref.frames is None:
            idx = thin(span_indices(tokens.clip_times, ref.start, ref.end), self.config.max_visual_tokens)
            return tokens.ids[idx], np.arange(len(idx))
        frame_times = np.asarray(self.assembler.frame_times(ref.video_id), np.float64)
        centres = frame_times[np.asarray(ref.frames, np.int64)] + 0.5  # frame f stands for [t_f, t_f + 1)
        clip_of = np.clip(np.searchsorted(tokens.clip_times[:, 1], centres, side="right"), 0, len(tokens.ids) - 1)
        lo, hi = int(clip_of.min()), int(clip_of.max())
        span = np.arange(lo, hi + 1)
        if len(span) > self.config.max_visual_tokens:
            raise VideoBertDataError(f"video {ref.video_id!r}: {len(ref.frames)} frames span {len(span)} visual words, "
                                     f"more than max_visual_tokens={self.config.max_visual_tokens}")
        return tokens.ids[span], clip_of - lo

    def row(self, item: Item) -> Row:
        visual, unit_of = self.visual(item.video)
        if item.text is None:
            text = self.template
        elif isinstance(item.text, str):
            text = self.assembler.encode(item.text)
        else:
            text = list(item.text)
        if text is not None:
            text = text[: max(1, self.assembler.max_text_len - 3)]
        ids, types, first = layout(self.config, text, visual)
        return Row(ids, types, np.full(len(ids), IGNORE_INDEX, np.int64), REGIME_ID["text_video" if text is not None else "video"],
                   1.0, item.video.video_id, first + unit_of)

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> VideoBertBatch:
        # VideoBERT has no region stream: use_regions changes nothing (the visual words are global)
        return collate_rows([self.row(it) for it in items], int(self.config.pad_token_id))

    def mask_positions(self, batch: VideoBertBatch) -> torch.Tensor:
        return (batch.input_ids == self.config.mask_token_id) & (batch.token_type_ids == 0)


# ----------------------------------------------------------------------------------------------
# Pretraining


class VideoBertPretrainDataset(torch.utils.data.Dataset):
    """The three regimes' samples (module docstring). ``source``: a ``PretrainSource``."""

    def __init__(self, source: Any):
        from actbert.data.clips import ClipAssembler
        from actbert.data.corpus import load_narrations

        self.config: VideoBertConfig = source.model_config
        self.vocab = vocabulary_of(self.config, "model")
        d = source.data
        self.masking = d.masking
        self.max_text_len = int(d.max_text_len)
        self.seed = int(source.seed)
        self.samples_per_video = int(d.samples_per_video)
        self.specials = SpecialTokens.from_tokenizer(source.tokenizer)
        self.tokenizer = source.tokenizer
        self.narrations = load_narrations(source.narrations)
        self.assembler = ClipAssembler(source.store, source.tokenizer)
        self.sentences = VisualSentences(self.assembler, self.vocab, self.config.visual_vocab)
        ids = list(source.video_ids) if source.video_ids is not None else list(source.store.video_ids())
        self.failures: list[dict[str, str]] = []
        self.video_ids: list[str] = []
        for vid in ids:
            try:
                if vid not in source.store:
                    raise VideoBertDataError(f"{source.store.root}: video {vid!r} is not in the feature store")
                if len(self.sentences(vid).ids) == 0:
                    raise VideoBertDataError(f"{source.store.root}: video {vid!r}: field 'second_features' gives no 1.5 s clip")
                self.video_ids.append(vid)
            except ActBertError as exc:
                self.failures.append({"video_id": vid, "error": str(exc)})
        if not self.video_ids:
            raise VideoBertDataError(f"{source.store.root}: none of the {len(ids)} videos is usable; first error: "
                                     f"{self.failures[0]['error'] if self.failures else 'no videos'}")
        self.with_text = [v for v in self.video_ids if v in self.narrations and len(self.narrations[v].text)]
        self._text: dict[str, list[list[int]]] = {}
        probs = np.array([self.config.regime_probs[r] for r in REGIMES], np.float64)
        if not self.with_text:  # no ASR anywhere: video-only (paper: all videos train the video objective)
            probs = np.array([0.0, 1.0, 0.0])
        self.regime_p = probs / probs.sum()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.video_ids) * self.samples_per_video

    def sentence_ids(self, video_id: str) -> list[list[int]]:
        out = self._text.get(video_id)
        if out is None:
            nar = self.narrations[video_id]
            order = np.argsort(nar.start, kind="stable")
            out = [self.tokenizer.encode(nar.text[i]) for i in order]
            self._text[video_id] = out
        return out

    def sentence_times(self, video_id: str) -> np.ndarray:
        nar = self.narrations[video_id]
        order = np.argsort(nar.start, kind="stable")
        return np.stack([nar.start[order], nar.end[order]], axis=1)

    def text_run(self, video_id: str, rng: np.random.Generator, count: int | None = None) -> tuple[list[int], float, float, int]:
        """1..max_sentences neighbouring sentences (``count`` of them if given): ids, span start/end, count."""
        sents, times = self.sentence_ids(video_id), self.sentence_times(video_id)
        n = int(rng.integers(1, min(self.config.max_sentences, len(sents)) + 1)) if count is None else min(count, len(sents))
        first = int(rng.integers(0, len(sents) - n + 1))
        ids = [t for s in sents[first : first + n] for t in s]
        return ids[: max(1, self.max_text_len - 3)], float(times[first, 0]), float(times[first + n - 1, 1]), n

    def visual_run(self, tokens: VideoTokens, rng: np.random.Generator, idx: np.ndarray, limit: int) -> np.ndarray:
        """Subsample ``idx`` at a random rate (1..max_subsample, random phase), then a random window of ``limit``."""
        rate = int(rng.integers(1, self.config.max_subsample + 1))
        idx = idx[int(rng.integers(0, rate)) :: rate] if len(idx) > rate else idx[:1]
        if len(idx) > limit:
            start = int(rng.integers(0, len(idx) - limit + 1))
            idx = idx[start : start + limit]
        return tokens.ids[idx]

    def __getitem__(self, index: int) -> Row:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        video_id = self.video_ids[index % len(self.video_ids)]
        regime = REGIMES[int(rng.choice(len(REGIMES), p=self.regime_p))]
        has_text = video_id in self.narrations and len(self.narrations[video_id].text) > 0
        if regime != "video" and not has_text:
            regime = "video"
        tokens = self.sentences(video_id)
        cfg = self.config
        text = visual = None
        align = -1.0
        if regime == "text":
            text = self.text_run(video_id, rng)[0]
        elif regime == "video":
            visual = self.visual_run(tokens, rng, np.arange(len(tokens.ids)), cfg.video_only_tokens)
        else:
            text, start, end, n = self.text_run(video_id, rng)
            visual = self.visual_run(tokens, rng, span_indices(tokens.clip_times, start, end), cfg.max_visual_tokens)
            align = 1.0
            others = [v for v in self.with_text if v != video_id]
            if others and rng.random() < self.masking.negative_probability:
                other = others[int(rng.integers(0, len(others)))]
                text = self.text_run(other, rng, n)[0]
                align = 0.0
        ids, types, first = layout(cfg, text, visual)
        is_word = np.zeros(len(ids), bool)
        if text is not None:
            is_word[1 : 1 + len(text)] = True
        is_visual = np.zeros(len(ids), bool)
        if visual is not None:
            is_visual[first : first + len(visual)] = True
        ids, text_labels = mask_tokens(ids, is_word & ~np.isin(ids, list(self.specials.special_ids)), rng, self.masking, self.specials)
        ids, visual_labels = mask_visual(ids, is_visual, rng, cfg)
        labels = np.where(text_labels != IGNORE_INDEX, text_labels, visual_labels)
        if align == 0.0 and not cfg.cloze_on_negatives:
            labels[:] = IGNORE_INDEX
        return Row(ids, types, labels, REGIME_ID[regime], align, video_id)


__all__ = [
    "Collator",
    "NO_ALIGN",
    "REGIME_ID",
    "Row",
    "VideoBertBatch",
    "VideoBertDataError",
    "VideoBertPretrainDataset",
    "VideoBertProcessor",
    "VisualSentences",
    "collate_rows",
    "layout",
    "mask_visual",
    "span_indices",
    "vocabulary_of",
]
