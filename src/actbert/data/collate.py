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
from torch.utils.data import DataLoader, Sampler

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


class ResumableDistributedSampler(Sampler[int]):
    """Splits each epoch's shuffled order between processes in whole micro-batches, resumably.

    The epoch's order is a permutation drawn from ``(seed, epoch)`` only. It is cut into chunks of
    ``chunk_size`` (= the per-process micro-batch size) and chunk ``j`` goes to rank ``j % W``.
    So micro-batch ``m`` of rank ``r`` is global chunk ``m * W + r``, and the ``W * A`` micro-batches
    that ``W`` processes with accumulation ``A`` run in one optimiser step are exactly the ones a
    single process with accumulation ``W * A`` runs: DDP training equals single-process training
    with the same global batch (``torch.utils.data.DistributedSampler`` deals single indices round
    robin instead, which regroups samples into different micro-batches).

    The last ``len(dataset) % (chunk_size * W)`` indices of each epoch's order are left out (a
    different few every epoch), so every process gets the same number of whole chunks.
    ``set_start(k)`` skips this rank's first ``k`` indices: a resumed run sees exactly the indices
    an uninterrupted run would have seen. ``num_replicas=1`` (single process) uses the same path.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 chunk_size: int = 1):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.dataset_size = len(dataset)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.chunks_per_rank = self.dataset_size // (self.chunk_size * self.num_replicas)
        self.num_samples = self.chunks_per_rank * self.chunk_size  # per rank and epoch
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def epoch_indices(self) -> list[int]:
        """This rank's indices for the current epoch (before ``start`` is applied)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator)
        else:
            order = torch.arange(self.dataset_size)
        used = self.chunks_per_rank * self.num_replicas * self.chunk_size
        chunks = order[:used].view(-1, self.chunk_size)  # [chunks, chunk_size]
        return chunks[self.rank :: self.num_replicas].reshape(-1).tolist()

    def __iter__(self):
        return iter(self.epoch_indices()[self.start :])

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
