"""Where a collator's batch arrays live: reused buffers in the main process, shared memory in a worker.

A base-layout pretraining batch of 32 is ~75 MB, almost all of it region features ``[B, Lr, 2048]``
and their class distributions ``[B, Lr, 1601]``. Arrays that large are above glibc's largest
``mmap`` threshold (32 MB), so a fresh ``np.empty`` per batch is fresh pages that the kernel faults
in and zeroes before the collator writes a single row: that was more than half of the padding's
time (docs/scale.md, "Data-path speed", fix 7). :class:`BatchMemory` hands out arrays so that:

* **in the main process** (no DataLoader workers) a large array is a view of a buffer kept from an
  earlier batch once nothing refers to that batch any more (the buffer's reference count is back to
  the pool's own: CPython counts every numpy view and every tensor made with ``torch.from_numpy``,
  and torch views share the storage that holds that reference), so its pages are already mapped;
* **in a DataLoader worker** every array is allocated in shared memory, as torch's
  ``default_collate`` does, so handing the batch to the main process copies nothing (otherwise the
  tensor is copied into a new shared segment when it is sent).

Values never depend on where an array lives: every element is written by the caller.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch

from actbert.data.masked_rows import MaskedRows

# arrays smaller than this come from the heap, whose pages glibc keeps: nothing to gain by pooling
POOL_MIN_BYTES = 1 << 20
# idle buffers kept (a batch has ~4 arrays above POOL_MIN_BYTES; a trainer holds 1-3 batches at once)
POOL_MAX_BUFFERS = 16

_NUMPY_OF_TORCH = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
                   torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_, torch.uint8: np.uint8}


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


class BatchMemory:
    """``empty(shape, dtype) -> torch.Tensor`` (uninitialised), from a pool or shared memory (module docstring)."""

    def __init__(self, max_buffers: int = POOL_MAX_BUFFERS, min_bytes: int = POOL_MIN_BYTES):
        self.max_buffers, self.min_bytes = int(max_buffers), int(min_bytes)
        self._buffers: list[np.ndarray] = []  # flat uint8; in use while anything else refers to one

    def __getstate__(self) -> dict:  # a worker gets its own (empty) pool: buffers are per process
        return {"max_buffers": self.max_buffers, "min_bytes": self.min_bytes, "_buffers": []}

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if _in_worker():
            storage = torch.UntypedStorage._new_shared(nbytes)
            return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        if nbytes < self.min_bytes or dtype not in _NUMPY_OF_TORCH:
            return torch.empty(shape, dtype=dtype)
        flat = self._take(nbytes)
        return torch.from_numpy(flat[:nbytes].view(_NUMPY_OF_TORCH[dtype]).reshape(shape))

    def _idle(self) -> list[int]:
        """Indices of the buffers nothing outside the pool refers to."""
        # sys.getrefcount(self._buffers[i]) counts the pool's list and its own argument: 2 when idle
        return [i for i in range(len(self._buffers)) if sys.getrefcount(self._buffers[i]) <= 2]

    def _take(self, nbytes: int) -> np.ndarray:
        idle = self._idle()
        fits = [i for i in idle if self._buffers[i].nbytes >= nbytes]
        if fits:  # the smallest idle buffer that holds the array
            return self._buffers[min(fits, key=lambda i: self._buffers[i].nbytes)]
        if len(self._buffers) >= self.max_buffers and idle:  # make room: the smallest idle buffer goes
            del self._buffers[min(idle, key=lambda i: self._buffers[i].nbytes)]
        # a quarter more than asked: the next batch's streams may be a little longer (padded to its longest row)
        flat = np.empty(nbytes + nbytes // 4, np.uint8)
        if len(self._buffers) < self.max_buffers:
            self._buffers.append(flat)
        return flat


def stack_padded(rows: Sequence[np.ndarray], length: int, value, dtype: torch.dtype,
                 memory: BatchMemory | None = None) -> torch.Tensor:
    """Stack ``rows`` (each ``[L_i, ...]``: arrays, or :class:`MaskedRows`, written without their zeros) into a
    ``[B, length, ...]`` tensor of ``dtype`` filled with ``value`` past each row; the rows are cast as numpy
    assignment casts. ``memory`` says where the tensor lives."""
    first = rows[0]
    shape = (len(rows), length, *first.shape[1:])
    tensor = memory.empty(shape, dtype) if memory is not None else torch.empty(shape, dtype=dtype)
    out = tensor.numpy()
    # each element is written once: the rows, then only the padding after them
    for i, row in enumerate(rows):
        if isinstance(row, MaskedRows):
            row.write_into(out[i, : len(row)])
        else:
            out[i, : len(row)] = row
        out[i, len(row):] = value
    return tensor
