"""Where collated batches live (data/batch_memory.py): reuse only what nothing refers to, shared memory in workers."""

import numpy as np
import pytest
import torch

from actbert.data.batch_memory import BatchMemory, stack_padded
from actbert.data.masked_rows import MaskedRows

BIG = (4, 300, 256)  # 1.2 MB of float32: above the pooling threshold


def test_stack_padded_matches_a_hand_built_batch():
    rows = [np.array([[1.5, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.25]])]  # float64 rows into a float32 batch
    out = stack_padded(rows, 3, -1.0, torch.float32, BatchMemory(min_bytes=0))
    want = torch.tensor([[[1.5, 2.0], [3.0, 4.0], [-1.0, -1.0]],
                         [[5.0, 6.25], [-1.0, -1.0], [-1.0, -1.0]]])
    assert out.dtype == torch.float32 and torch.equal(out, want)
    ids = stack_padded([np.array([7, 8, 9]), np.array([4])], 4, 0, torch.long)
    assert torch.equal(ids, torch.tensor([[7, 8, 9, 0], [4, 0, 0, 0]]))


def test_a_buffer_in_use_is_never_handed_out_and_is_reused_once_free():
    memory = BatchMemory()
    first = memory.empty(BIG, torch.float32)
    first.fill_(1.0)
    view = first[:, :10]  # a torch view keeps the storage, and so the buffer, in use
    del first
    second = memory.empty(BIG, torch.float32)
    second.fill_(2.0)
    assert torch.all(view == 1.0), "a buffer still referred to was written again"
    array = view.numpy()  # a numpy view of the tensor likewise
    del view
    third = memory.empty(BIG, torch.float32)
    third.fill_(3.0)
    assert np.all(array == 1.0)
    pointer = array.ctypes.data
    del array, second, third
    again = memory.empty(BIG, torch.float32)
    # the pool holds three buffers now, all idle: the first one (the smallest that fits, all equal) comes back
    assert again.data_ptr() == pointer and len(memory._buffers) == 3


def test_small_arrays_are_not_pooled_and_the_pool_is_bounded():
    memory = BatchMemory(max_buffers=2)
    small = memory.empty((8, 8), torch.int64)
    assert small.shape == (8, 8) and not memory._buffers
    held = [memory.empty(BIG, torch.float32) for _ in range(4)]  # all in use: two pooled, two not
    assert len(memory._buffers) == 2
    assert len({t.data_ptr() for t in held}) == 4


def _collate_in_worker(rows):
    memory = BatchMemory()
    batch = stack_padded(rows, 5, 0.0, torch.float32, memory)
    return batch, batch.is_shared()  # the flag is read in the worker, before the batch is sent


def test_a_worker_collates_straight_into_shared_memory():
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((int(n), 3)).astype(np.float32) for n in rng.integers(1, 6, size=8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=1, collate_fn=_collate_in_worker)
    batches = list(loader)
    assert [shared for _, shared in batches] == [True, True]
    main = [stack_padded(data[i:i + 4], 5, 0.0, torch.float32) for i in (0, 4)]
    for (got, _), want in zip(batches, main):
        assert torch.equal(got, want)
    # in the main process nothing is allocated in shared memory
    assert not stack_padded(data[:4], 5, 0.0, torch.float32, BatchMemory(min_bytes=0)).is_shared()


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32])
def test_every_batch_dtype_round_trips_through_the_pool(dtype):
    rows = [np.ones((300, 1024), dtype=np.float32)] * 2
    out = stack_padded(rows, 301, 0, dtype, BatchMemory(min_bytes=0))
    assert out.dtype == dtype and out.shape == (2, 301, 1024)
    assert out[:, :300].to(torch.float32).eq(1).all() and out[:, 300].to(torch.float32).eq(0).all()


def test_masked_rows_are_the_dense_array_they_stand_for():
    rows = np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)
    sparse = MaskedRows(4, np.array([1, 3]), rows)
    dense = np.array([[0, 0], [0.25, 0.75], [0, 0], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(sparse), dense)
    np.testing.assert_array_equal(sparse[np.array([False, True, False, True])], rows)
    assert sparse.shape == (4, 2) and sparse.dtype == np.float32 and len(sparse) == 4
    # collated: the same batch as from the dense rows, into a pooled buffer that held other values before
    memory = BatchMemory(min_bytes=0)
    stale = memory.empty((2, 5, 2), torch.float32)
    stale.fill_(9.0)
    del stale
    got = stack_padded([sparse, dense[:2]], 5, -1.0, torch.float32, memory)
    want = stack_padded([dense, dense[:2]], 5, -1.0, torch.float32)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="row indices must lie in"):
        MaskedRows(3, np.array([3]), rows[:1])
