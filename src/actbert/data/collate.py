"""Padding :class:`~actbert.data.samples.Sample` rows into an :class:`~actbert.data.batch.ActBertBatch`,
and the DataLoader that feeds pretraining.

Streams are padded to the longest row of the batch, or to fixed lengths (``pad_to``: constant
shapes for benchmarking and compiled graphs). Padding uses [PAD] ids, zero features, position and
segment id 0, ``mask = False`` and no targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from actbert.data.batch import ActBertBatch
from actbert.data.masking import IGNORE_INDEX
from actbert.data.samples import Sample


def _pad(rows: Sequence[np.ndarray], length: int, value, dtype: torch.dtype) -> torch.Tensor:
    """Stack ``rows`` (each ``[L_i, ...]``) into ``[B, length, ...]`` filled with ``value``."""
    first = rows[0]
    out = np.full((len(rows), length, *first.shape[1:]), value, dtype=first.dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out).to(dtype)


@dataclass
class Collator:
    """``collate(samples) -> ActBertBatch``. ``pad_to = (Lt, La, Lr)`` fixes the padded lengths."""

    pad_id: int
    pad_to: tuple[int, int, int] | None = None

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
        f32, i64 = torch.float32, torch.long
        return ActBertBatch(
            input_ids=_pad(col("input_ids"), lt, self.pad_id, i64),
            text_segment_ids=_pad(col("text_segment_ids"), lt, 0, i64),
            text_position_ids=_pad(col("text_position_ids"), lt, 0, i64),
            text_mask=_pad([np.ones(len(s.input_ids), bool) for s in samples], lt, False, torch.bool),
            action_token_ids=_pad(col("action_token_ids"), la, self.pad_id, i64),
            action_features=_pad(col("action_features"), la, 0.0, f32),
            action_segment_ids=_pad(col("action_segment_ids"), la, 0, i64),
            action_position_ids=_pad(col("action_position_ids"), la, 0, i64),
            action_mask=_pad([np.ones(len(s.action_token_ids), bool) for s in samples], la, False, torch.bool),
            region_token_ids=_pad(col("region_token_ids"), lr, self.pad_id, i64),
            region_features=_pad(col("region_features"), lr, 0.0, f32),
            region_locations=_pad(col("region_locations"), lr, 0.0, f32),
            region_segment_ids=_pad(col("region_segment_ids"), lr, 0, i64),
            region_position_ids=_pad(col("region_position_ids"), lr, 0, i64),
            region_mask=_pad([np.ones(len(s.region_token_ids), bool) for s in samples], lr, False, torch.bool),
            mlm_labels=_pad(col("mlm_labels"), lt, IGNORE_INDEX, i64),
            action_targets=_pad(col("action_targets"), la, 0.0, f32),
            action_target_mask=_pad(col("action_target_mask"), la, False, torch.bool),
            region_targets=_pad(col("region_targets"), lr, 0.0, f32),
            region_target_mask=_pad(col("region_target_mask"), lr, False, torch.bool),
            match_labels=torch.tensor([s.match_label for s in samples], dtype=f32),
            video_ids=[s.video_id for s in samples],
        )


class ResumableDistributedSampler(DistributedSampler):
    """:class:`torch.utils.data.DistributedSampler` that can start part-way through an epoch.

    The epoch's order depends only on ``(seed, epoch)``; ``set_start(k)`` skips this rank's first
    ``k`` indices, so a resumed run sees exactly the indices an uninterrupted run would have seen.
    Works with ``num_replicas=1`` (single process) too, so both cases share one code path.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def make_loader(
    dataset,
    batch_size: int,
    collator: Collator,
    sampler: ResumableDistributedSampler,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``sampler`` (drop_last) whose batches depend only on the seed and epoch.

    Passing an explicit ``generator`` keeps the DataLoader from drawing worker seeds from the global
    torch RNG, which would shift dropout randomness between an interrupted and a resumed run.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
    )
