"""The read-ahead hint asks for exactly the rows about to be read, page-aligned, and changes no value."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from actbert.data import prefetch


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(prefetch, "_madvise", lambda addr, length, advice: seen.append((addr, length, advice)) or 0)
    return seen


def test_hint_covers_the_rows_from_the_page_below_them(calls):
    a = np.zeros((1000, 300), np.float32)  # 1,200-byte rows
    base = a.__array_interface__["data"][0]
    prefetch.will_need(a, 10, 20)
    ((addr, length, advice),) = calls
    first, end = base + 10 * 1200, base + 20 * 1200
    assert advice == mmap.MADV_WILLNEED and addr % mmap.PAGESIZE == 0
    assert addr <= first < addr + mmap.PAGESIZE and addr + length == end


def test_rows_are_clipped_as_in_slicing_and_nothing_is_asked_for_no_rows(calls):
    a = np.zeros((50, 8), np.float64)
    base = a.__array_interface__["data"][0]
    prefetch.will_need(a, 40, 5000)
    prefetch.will_need(a, -5)  # the last five rows
    assert [addr + length for addr, length, _ in calls] == [base + 50 * 64] * 2
    assert calls[0][0] <= base + 40 * 64 and calls[1][0] <= base + 45 * 64
    prefetch.will_need(a, 30, 30)
    prefetch.will_need(np.zeros((0, 3)))
    prefetch.will_need(a[:, ::2])  # not contiguous: no hint
    assert len(calls) == 2


def test_a_real_hint_on_a_memory_map_changes_no_value(tmp_path):
    a = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
    path = tmp_path / "rows.bin"
    a.tofile(path)
    m = np.memmap(path, dtype=np.float32, mode="r", shape=a.shape)
    prefetch.will_need(m, 1000, 3000)
    prefetch.will_need(m)
    np.testing.assert_array_equal(m[1000:3000], a[1000:3000])
    np.testing.assert_array_equal(np.asarray(m), a)
