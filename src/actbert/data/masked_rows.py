"""A sample's region class distributions as what they are: zero except at the masked rows.

A pretraining sample's ``region_targets`` ``[Lr, K]`` (K = 1,601 detector classes at the base layout) is
read by the losses at the masked regions only (about 15% of the rows), and is zero elsewhere. Built
dense, each sample wrote ~1 MB of zeros that the collator then copied into the batch (the zeros
alone were 5% of a warm sample's time under the profiler; docs/scale.md, "Data-path speed", fix 10). :class:`MaskedRows` keeps the masked rows
and where they go; the collator (:func:`actbert.data.batch_memory.stack_padded`) writes them straight
into the zeroed batch row. Anything else sees the dense array (``np.asarray``, indexing).
"""

from __future__ import annotations

import numpy as np


class MaskedRows:
    """An ``[length, K]`` array, zero except ``rows [n, K]`` at row indices ``at [n]`` (increasing)."""

    ndim = 2

    def __init__(self, length: int, at: np.ndarray, rows: np.ndarray):
        at = np.asarray(at, np.int64)
        if rows.ndim != 2 or len(rows) != len(at):
            raise ValueError(f"MaskedRows: {len(at)} row indices for rows of shape {list(rows.shape)}")
        if len(at) and (at.min() < 0 or at.max() >= length):
            raise ValueError(f"MaskedRows: row indices must lie in [0, {length}), got {at.min()}..{at.max()}")
        self.length, self.at, self.rows = int(length), at, rows

    @property
    def shape(self) -> tuple[int, int]:
        return self.length, int(self.rows.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.rows.dtype

    def __len__(self) -> int:
        return self.length

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = np.zeros(self.shape, self.rows.dtype)
        dense[self.at] = self.rows
        return dense if dtype is None else dense.astype(dtype)

    def __getitem__(self, key):
        return np.asarray(self)[key]

    def write_into(self, out: np.ndarray) -> None:
        """Write the dense array into ``out`` (``[length, K]``, e.g. a batch row): zeros, then the rows."""
        out[...] = 0
        out[self.at] = self.rows
