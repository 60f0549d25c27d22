"""Read-ahead hints for memory-mapped records: tell the kernel which bytes a sample is about to read.

A store record (or a packed shard) is memory-mapped, and a sample reads a few scattered rows of it.
On a page-cache miss the kernel reads a whole read-around window centred on the faulting page
(``/sys/block/*/queue/read_ahead_kb``: 8 MB on the development VM), so every first touch of a cold
record -- its header, clip times, a window's region rows -- can read megabytes that nothing uses.
:func:`will_need` issues ``madvise(MADV_WILLNEED)`` for exactly the rows about to be read: the kernel
starts reading them at once, and the touches that follow find the pages in the cache instead of
faulting in read-around windows (docs/scale.md, "Data-path speed", fix 6). :func:`random_access`
marks a whole map ``MADV_RANDOM`` when it is opened, so that a touch nothing hinted reads its page
alone rather than a read-around window (fix 11).

A hint only: values never change. It goes through the standard library's ``mmap.mmap.madvise`` of
the mapping under the array; for an array that is not a view of a memory map, an empty or
non-contiguous one, or where the platform has no ``madvise``, nothing happens.
"""

from __future__ import annotations

import mmap

import numpy as np

_PAGE = mmap.PAGESIZE
_HAVE_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_WILLNEED")


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap.mmap`` under ``array`` (a ``numpy.memmap``, an ``np.frombuffer`` of a map, or a view or slice
    of either), else None."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return base


def _advise(mapping: mmap.mmap, start: int, length: int) -> None:
    try:
        mapping.madvise(mmap.MADV_WILLNEED, start, length)
    except (OSError, ValueError):  # a hint the kernel refuses changes nothing that is read
        pass


def will_need(array: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Hint that rows ``start .. stop-1`` of ``array`` (its first axis; all of it by default) are about
    to be read. Rows out of range are clipped, as in slicing."""
    if not _HAVE_MADVISE or array.ndim == 0 or not array.flags.c_contiguous:
        return
    start, stop, _ = slice(start, stop).indices(array.shape[0])
    if stop <= start or array.nbytes == 0:
        return
    mapping = _mapping(array)
    if mapping is None or len(mapping) == 0:
        return
    row = array.nbytes // array.shape[0]
    origin = np.frombuffer(mapping, np.uint8, count=1).__array_interface__["data"][0]
    begin = array.__array_interface__["data"][0] - origin + start * row  # offset in the mapping
    aligned = begin - begin % _PAGE
    _advise(mapping, aligned, min(begin + (stop - start) * row, len(mapping)) - aligned)


def random_access(array: np.ndarray) -> None:
    """Tell the kernel that the memory map under ``array`` (a record's or a shard's) is read at random
    (``MADV_RANDOM``): a page fault then reads the page it needs instead of a read-around window of
    ``read_ahead_kb`` (8 MB on the development VM) around it, most of which no sample reads. The rows a
    sample reads are hinted with :func:`will_need`, which reads them ahead all the same (docs/scale.md,
    "Data-path speed", fix 11). Nothing happens where there is no map or no ``madvise``."""
    mapping = _mapping(array)
    if mapping is None or len(mapping) == 0 or not hasattr(mmap, "MADV_RANDOM"):
        return
    try:
        mapping.madvise(mmap.MADV_RANDOM)
    except (OSError, ValueError):  # a hint the kernel refuses changes nothing that is read
        pass
