"""The read-ahead hint asks for exactly the rows about to be read, from the page below them, of the
memory map under the array, and changes no value."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from actbert.data import prefetch

pytestmark = pytest.mark.skipif(not prefetch._HAVE_MADVISE, reason="this platform's mmap has no madvise")


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(prefetch, "_advise", lambda mapping, start, length: seen.append((mapping, start, length)))
    return seen


def _mapped(tmp_path, array, offset=0):
    """``array`` written after ``offset`` bytes of padding, memory-mapped back (offset: not page-aligned)."""
    path = tmp_path / "rows.bin"
    with open(path, "wb") as f:
        f.write(b"\0" * offset + array.tobytes())
    return np.memmap(path, dtype=array.dtype, mode="r", offset=offset, shape=array.shape)


def test_hint_covers_the_rows_from_the_page_below_them(tmp_path, calls):
    m = _mapped(tmp_path, np.zeros((1000, 300), np.float32), offset=100)  # 1,200-byte rows after 100 bytes
    prefetch.will_need(np.asarray(m)[:, :], 10, 20)  # a view of the map finds it too
    ((mapping, start, length),) = calls
    first, end = 100 + 10 * 1200, 100 + 20 * 1200  # byte offsets of the rows in the file
    assert isinstance(mapping, mmap.mmap) and start % mmap.PAGESIZE == 0
    assert start <= first < start + mmap.PAGESIZE and start + length == end


def test_rows_are_clipped_as_in_slicing_and_nothing_is_asked_for_no_rows_or_no_map(tmp_path, calls):
    m = _mapped(tmp_path, np.zeros((50, 8), np.float64))
    prefetch.will_need(m, 40, 5000)
    prefetch.will_need(m, -5)  # the last five rows
    assert [start + length for _, start, length in calls] == [50 * 64] * 2
    assert calls[0][1] <= 40 * 64 and calls[1][1] <= 45 * 64
    prefetch.will_need(m, 30, 30)
    prefetch.will_need(m[:, ::2])  # not contiguous
    prefetch.will_need(np.zeros((10, 3)))  # not a memory map
    assert len(calls) == 2


def test_a_real_hint_on_a_memory_map_changes_no_value(tmp_path):
    a = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
    m = _mapped(tmp_path, a, offset=12)
    prefetch.will_need(m, 1000, 3000)
    prefetch.will_need(m)
    np.testing.assert_array_equal(m[1000:3000], a[1000:3000])
    np.testing.assert_array_equal(np.asarray(m), a)


def _vm_flags_of(address: int) -> list[str]:
    """The kernel's VmFlags of the mapping that holds ``address`` (/proc/self/smaps)."""
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                current = lo <= address < hi
            elif head == "VmFlags:" and current:
                return line.split()[1:]
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.skipif(not hasattr(mmap, "MADV_RANDOM") or not os.path.exists("/proc/self/smaps"),
                    reason="needs MADV_RANDOM and /proc/self/smaps (Linux)")
def test_store_and_shard_maps_are_marked_random_access(tmp_path):
    from actbert.data.shards import ShardIndex, pack_store
    from actbert.data.store import FeatureStore, FeatureStoreWriter
    from test_store import make_features, make_schema

    FeatureStoreWriter(tmp_path / "store", make_schema()).write("a", make_features(1, frames=50, region_dim=4))
    record = FeatureStore(tmp_path / "store")["a"]
    assert "rr" in _vm_flags_of(record.region_features.ctypes.data)  # rr: MADV_RANDOM on this map
    pack_store(tmp_path / "store", tmp_path / "shards", 1)
    packed = ShardIndex(tmp_path / "shards")["a"]
    assert "rr" in _vm_flags_of(packed.region_features.ctypes.data)
    plain = _mapped(tmp_path, np.zeros((1000, 300), np.float32))
    assert "rr" not in _vm_flags_of(plain.ctypes.data)  # what the flag is without the advice
    prefetch.random_access(plain)
    assert "rr" in _vm_flags_of(plain.ctypes.data)
