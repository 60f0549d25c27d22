"""The sampler and DataLoader that feed pretraining (resumable, identical across process counts).

Turning samples into a model's batch is the model family's job: the loader takes the family's
collator (``processor_class.pretraining_collator``, e.g. ActBERT's
:class:`~actbert.models.actbert.processing.Collator`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Sampler



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
    collator: Callable,
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
