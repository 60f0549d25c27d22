"""Read-ahead hints for memory-mapped records: tell the kernel which bytes a sample is about to read.

A store record (or a packed shard) is memory-mapped, and a sample reads a few scattered rows of it.
On a page-cache miss the kernel reads a whole read-around window centred on the faulting page
(``/sys/block/*/queue/read_ahead_kb``: 8 MB on the development VM), so every first touch of a cold
record -- its header, clip times, a window's region rows -- can read megabytes that nothing uses.
:func:`will_need` issues ``madvise(MADV_WILLNEED)`` for exactly the rows about to be read: the kernel
starts reading them at once, and the touches that follow find the pages in the cache instead of
faulting in read-around windows (docs/scale.md, "Data-path speed", fix 6).

A hint only: values never change; where ``madvise`` is unavailable (not a POSIX libc), the array is
empty or not C-contiguous, nothing happens. For memory that is not a file mapping (an ordinary array)
the call is harmless.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import numpy as np

_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)
_PAGE = mmap.PAGESIZE


def _load_madvise():
    if _MADV_WILLNEED is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def will_need(array: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Hint that rows ``start .. stop-1`` of ``array`` (its first axis; all of it by default) are about
    to be read. Rows out of range are clipped, as in slicing."""
    if _madvise is None or array.ndim == 0 or not array.flags.c_contiguous:
        return
    start, stop, _ = slice(start, stop).indices(array.shape[0])
    if stop <= start or array.itemsize == 0:
        return
    row = array.nbytes // array.shape[0]
    if row == 0:
        return
    begin = array.__array_interface__["data"][0] + start * row
    aligned = begin - begin % _PAGE
    _madvise(aligned, begin + (stop - start) * row - aligned, _MADV_WILLNEED)
