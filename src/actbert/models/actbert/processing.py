"""ActBERT's input processing: samples / task items -> :class:`~actbert.models.actbert.batch.ActBertBatch`.

* :class:`Collator` pads pretraining :class:`~actbert.data.samples.Sample` rows into a batch.
  Streams are padded to the longest row of the batch, or to fixed lengths (``pad_to``: constant
  shapes for benchmarking and compiled graphs). Padding uses [PAD] ids, zero features, position
  and segment id 0, ``mask = False`` and no targets.
* :class:`ActBertProcessor` lays out task items (:class:`~actbert.models.processing.Item`) exactly
  like a pretraining input (the same :class:`~actbert.data.samples.SampleBuilder`, no second
  builder): the item's units (one [ACT] + the regions of its frame each) and its text
  ``[CLS] s [SEP]`` (``[CLS] [SEP]`` without text). ``use_regions=False`` gives every unit no
  region and marks the batch so the model skips its region stream ("without region cues").
* :func:`random_batch`: the real layout with random content, for shape checks and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from actbert.data.batch_memory import BatchMemory, stack_padded
from actbert.data.corpus import VideoClips
from actbert.data.masking import IGNORE_INDEX
from actbert.data.samples import Sample, SampleBuilder
from actbert.models.actbert.batch import ActBertBatch
from actbert.models.actbert.configuration import ActBertConfig
from actbert.models.processing import Item, Processor, VideoRef


def _mask(lengths: Sequence[int], length: int) -> torch.Tensor:
    """``[B, length]`` bool: True at the first ``lengths[b]`` positions of row ``b``."""
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


@dataclass
class Collator:
    """``collate(samples) -> ActBertBatch``. ``pad_to = (Lt, La, Lr)`` fixes the padded lengths."""

    pad_id: int
    pad_to: tuple[int, int, int] | None = None
    # where the batch's arrays live (data/batch_memory.py): reused buffers, or shared memory in a worker
    memory: BatchMemory = field(default_factory=BatchMemory, repr=False, compare=False)

    def lengths(self, samples: Sequence[Sample]) -> tuple[int, int, int]:
        lt = max(len(s.input_ids) for s in samples)
        la = max(len(s.action_token_ids) for s in samples)
        lr = max(len(s.region_token_ids) for s in samples)
        if self.pad_to is None:
            return lt, la, lr
        fixed = tuple(int(x) for x in self.pad_to)
        for name, have, want in zip(("text", "action", "region"), (lt, la, lr), fixed):
            if have > want:
                raise ValueError(f"pad_to: a {name} stream of length {have} does not fit the fixed length {want}")
        return fixed  # type: ignore[return-value]

    def __call__(self, samples: Sequence[Sample]) -> ActBertBatch:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        lt, la, lr = self.lengths(samples)
        col = lambda name: [getattr(s, name) for s in samples]  # noqa: E731
        _pad = lambda rows, length, value, dtype: stack_padded(rows, length, value, dtype, self.memory)  # noqa: E731
        f32, i64 = torch.float32, torch.long
        return ActBertBatch(
            input_ids=_pad(col("input_ids"), lt, self.pad_id, i64),
            text_segment_ids=_pad(col("text_segment_ids"), lt, 0, i64),
            text_position_ids=_pad(col("text_position_ids"), lt, 0, i64),
            text_mask=_mask([len(s.input_ids) for s in samples], lt),
            action_token_ids=_pad(col("action_token_ids"), la, self.pad_id, i64),
            action_features=_pad(col("action_features"), la, 0.0, f32),
            action_segment_ids=_pad(col("action_segment_ids"), la, 0, i64),
            action_position_ids=_pad(col("action_position_ids"), la, 0, i64),
            action_mask=_mask([len(s.action_token_ids) for s in samples], la),
            region_token_ids=_pad(col("region_token_ids"), lr, self.pad_id, i64),
            region_features=_pad(col("region_features"), lr, 0.0, f32),
            region_locations=_pad(col("region_locations"), lr, 0.0, f32),
            region_segment_ids=_pad(col("region_segment_ids"), lr, 0, i64),
            region_position_ids=_pad(col("region_position_ids"), lr, 0, i64),
            region_mask=_mask([len(s.region_token_ids) for s in samples], lr),
            mlm_labels=_pad(col("mlm_labels"), lt, IGNORE_INDEX, i64),
            action_targets=_pad(col("action_targets"), la, 0.0, f32),
            action_target_mask=_pad(col("action_target_mask"), la, False, torch.bool),
            region_targets=_pad(col("region_targets"), lr, 0.0, f32),
            region_target_mask=_pad(col("region_target_mask"), lr, False, torch.bool),
            match_labels=torch.tensor([s.match_label for s in samples], dtype=f32),
            video_ids=[s.video_id for s in samples],
        )


class ActBertProcessor(Processor):
    """Task items -> :class:`ActBertBatch` (module docstring). Units are cached per (ref, regions)."""

    def __init__(self, assembler: Any, config: ActBertConfig):
        super().__init__(assembler, config)
        a = assembler
        self.specials = a.specials
        self.builder = SampleBuilder(a.corpus, a.specials, clips_per_sample=a.max_units, max_text_len=a.max_text_len)
        self.collator = Collator(pad_id=a.specials.pad_id)
        self._units: dict[tuple[VideoRef, bool], VideoClips] = {}

    @classmethod
    def pretraining_collator(cls, config: ActBertConfig, tokenizer: Any, pad_to: tuple[int, int, int] | None = None) -> Collator:
        return Collator(int(tokenizer.pad_id), pad_to)

    def units(self, ref: VideoRef, regions: bool = True) -> VideoClips:
        key = (ref, bool(regions))
        units = self._units.get(key)
        if units is None:
            units = self.assembler.units(ref, regions)
            if len(self._units) > 4096:
                self._units.clear()
            self._units[key] = units
        return units

    def sample(self, clips: VideoClips, sentences: Sequence[str | Sequence[int]] = ()) -> Sample:
        """One row: ``[CLS] s1 [SEP] s2 [SEP] ...`` (``[CLS] [SEP]`` when ``sentences`` is empty) + the units."""
        encode = self.assembler.encode
        tokens = [encode(s) if isinstance(s, str) else list(s) for s in sentences] or [[]]
        text = VideoClips(
            video_id=clips.video_id,
            clip_times=np.zeros((len(tokens), 2)),
            tokens=tokens,
            action_features=clips.action_features[:0],
            action_targets=clips.action_targets[:0],
            region_features=clips.region_features[:0],
            region_locations=clips.region_locations[:0],
            region_class_probs=clips.region_class_probs[:0],
            region_valid=clips.region_valid[:0],
            region_frame=clips.region_frame[:0],
        )
        sample = self.builder.build(clips, 0, clips.num_clips, text_from=(text, 0, len(tokens)))
        sample.match_label = 1.0  # the task sets labels where it trains
        return sample

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> ActBertBatch:
        samples = [self.sample(self.units(it.video, use_regions), [] if it.text is None else [it.text]) for it in items]
        batch = self.collator(samples)
        batch.use_regions = bool(use_regions)
        return batch

    def mask_positions(self, batch: ActBertBatch) -> torch.Tensor:
        return batch.input_ids == self.specials.mask_id


def random_batch(
    config: ActBertConfig,
    batch_size: int = 2,
    clips: int | Sequence[int] = 3,
    words_per_clip: int = 4,
    regions_per_clip: int = 3,
    with_targets: bool = True,
    seed: int = 0,
) -> ActBertBatch:
    """A batch with the real layout and random content, for shape checks, tests and benchmarks.

    ``clips`` may differ per row (a sequence of length ``batch_size``) so rows carry padding.
    Text: ``[CLS] w.. [SEP] w.. [SEP] ..``; actions: ``[ACT] x C, [SEP]``; regions:
    ``([REGION] x n, [SEP]) x C``. Segment id = clip index; word positions run; action and
    region positions = clip (frame) index. Word ids avoid the special ids below 1000.
    """
    g = torch.Generator().manual_seed(seed)
    per_row = [clips] * batch_size if isinstance(clips, int) else list(clips)
    rows = []
    for c in per_row:
        text_ids, text_seg = [101], [0]
        for k in range(c):
            text_ids += torch.randint(1000, min(config.vocab_size, 30000), (words_per_clip,), generator=g).tolist() + [102]
            text_seg += [k] * (words_per_clip + 1)
        act_ids = [config.act_token_id] * c + [config.sep_token_id]
        act_pos, act_seg = list(range(c)) + [c], list(range(c)) + [max(c - 1, 0)]
        reg_ids, reg_pos = [], []
        for k in range(c):
            reg_ids += [config.region_token_id] * regions_per_clip + [config.sep_token_id]
            reg_pos += [k] * (regions_per_clip + 1)
        rows.append((text_ids, text_seg, act_ids, act_pos, act_seg, reg_ids, reg_pos))
    lt = max(len(r[0]) for r in rows)
    la = max(len(r[2]) for r in rows)
    lr = max(len(r[5]) for r in rows)

    def pad(seqs: list[list[int]], length: int, value: int) -> torch.Tensor:
        return torch.tensor([s + [value] * (length - len(s)) for s in seqs], dtype=torch.long)

    text_mask = pad([[1] * len(r[0]) for r in rows], lt, 0).bool()
    action_mask = pad([[1] * len(r[2]) for r in rows], la, 0).bool()
    region_mask = pad([[1] * len(r[5]) for r in rows], lr, 0).bool()
    action_token_ids = pad([r[2] for r in rows], la, config.pad_token_id)
    region_token_ids = pad([r[5] for r in rows], lr, config.pad_token_id)
    is_act, is_region = action_token_ids == config.act_token_id, region_token_ids == config.region_token_id
    boxes = torch.rand(batch_size, lr, 4, generator=g)
    x1, x2 = torch.minimum(boxes[..., 0], boxes[..., 2]), torch.maximum(boxes[..., 0], boxes[..., 2])
    y1, y2 = torch.minimum(boxes[..., 1], boxes[..., 3]), torch.maximum(boxes[..., 1], boxes[..., 3])
    locations = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], dim=-1) * is_region[..., None]
    batch = ActBertBatch(
        input_ids=pad([r[0] for r in rows], lt, config.pad_token_id),
        text_segment_ids=pad([r[1] for r in rows], lt, 0),
        text_position_ids=pad([list(range(len(r[0]))) for r in rows], lt, 0),
        text_mask=text_mask,
        action_token_ids=action_token_ids,
        action_features=torch.randn(batch_size, la, config.action_feature_dim, generator=g) * is_act[..., None],
        action_segment_ids=pad([r[4] for r in rows], la, 0),
        action_position_ids=pad([r[3] for r in rows], la, 0),
        action_mask=action_mask,
        region_token_ids=region_token_ids,
        region_features=torch.randn(batch_size, lr, config.region_feature_dim, generator=g).relu() * is_region[..., None],
        region_locations=locations,
        region_segment_ids=pad([[p for p in r[6]] for r in rows], lr, 0),
        region_position_ids=pad([r[6] for r in rows], lr, 0),
        region_mask=region_mask,
        video_ids=[f"random{i}" for i in range(batch_size)],
    )
    if with_targets:
        is_word = text_mask & (batch.input_ids >= 1000)
        chosen = is_word & (torch.rand(batch_size, lt, generator=g) < 0.3)
        chosen[:, 1] = is_word[:, 1]  # at least one target per row
        batch.mlm_labels = torch.where(chosen, batch.input_ids, torch.full_like(batch.input_ids, -100))
        batch.input_ids = torch.where(chosen, torch.full_like(batch.input_ids, 103), batch.input_ids)
        batch.action_targets = torch.softmax(torch.randn(batch_size, la, config.num_actions, generator=g) * 3, -1)
        batch.action_targets = batch.action_targets * is_act[..., None]
        batch.action_target_mask = is_act & (torch.rand(batch_size, la, generator=g) < 0.5)
        batch.action_target_mask[:, 0] = True
        batch.action_features = batch.action_features * ~batch.action_target_mask[..., None]
        batch.region_targets = torch.softmax(torch.randn(batch_size, lr, config.num_region_classes, generator=g) * 3, -1)
        batch.region_targets = batch.region_targets * is_region[..., None]
        batch.region_target_mask = is_region & (torch.rand(batch_size, lr, generator=g) < 0.5)
        batch.region_target_mask[:, 0] = True
        batch.region_features = batch.region_features * ~batch.region_target_mask[..., None]
        batch.match_labels = (torch.arange(batch_size) % 2 == 0).float()
    return batch


__all__ = ["ActBertProcessor", "Collator", "random_batch"]
