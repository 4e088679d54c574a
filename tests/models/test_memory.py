"""MoCo's FIFO memory queue (contrastkit.models.memory)."""

from collections import deque

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.models import MemoryQueue


def in_age_order(queue: MemoryQueue) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Filled rows oldest first: the storage is a ring whose oldest row sits at the pointer once full."""
    keys, labels = queue.get()
    if keys.shape[0] < queue.size:
        return keys, labels
    shift = -int(queue.pointer)
    return keys.roll(shift, 0), None if labels is None else labels.roll(shift, 0)


def test_fifo_order_with_wrap_around_matches_a_deque():
    size, dim = 7, 3
    queue = MemoryQueue(size, dim, with_labels=True)
    reference: deque = deque(maxlen=size)
    generator = torch.Generator().manual_seed(0)
    next_label = 0
    # Batches of 3 into 7 rows: the third and later batches wrap past the end of the buffer.
    for step, batch in enumerate([3, 3, 3, 2, 5, 7, 1, 4]):
        keys = torch.randn(batch, dim, generator=generator)
        labels = torch.arange(next_label, next_label + batch)
        next_label += batch
        queue.enqueue(keys, labels)
        reference.extend(zip(keys, labels.tolist()))
        got_keys, got_labels = in_age_order(queue)
        assert got_keys.shape == (len(reference), dim)
        assert torch.equal(got_keys, torch.stack([k for k, _ in reference])), step
        assert got_labels.tolist() == [label for _, label in reference], step
        assert int(queue.count) == len(reference)
        assert int(queue.pointer) == next_label % size


def test_oldest_keys_are_replaced_and_a_wrapping_batch_writes_its_tail_at_the_start():
    queue = MemoryQueue(5, 1)
    queue.enqueue(torch.arange(4.0)[:, None])           # rows 0..3 = 0, 1, 2, 3
    queue.enqueue(torch.tensor([[10.0], [11.0], [12.0]]))  # row 4 = 10, then wraps: rows 0, 1 = 11, 12
    assert queue.keys.flatten().tolist() == [11.0, 12.0, 2.0, 3.0, 10.0]
    assert int(queue.pointer) == 2 and int(queue.count) == 5


def test_partly_filled_queue_returns_only_the_filled_rows_and_empty_labels_are_minus_one():
    queue = MemoryQueue(6, 2, with_labels=True)
    assert queue.get()[0].shape == (0, 2)
    assert queue.labels.tolist() == [-1] * 6
    queue.enqueue(torch.ones(4, 2), torch.tensor([5, 6, 7, 8]))
    keys, labels = queue.get()
    assert keys.shape == (4, 2) and labels.tolist() == [5, 6, 7, 8]
    assert queue.labels.tolist() == [5, 6, 7, 8, -1, -1]
    assert MemoryQueue(6, 2).get()[1] is None


def test_full_queue_returns_the_whole_buffer():
    queue = MemoryQueue(4, 2)
    queue.enqueue(torch.ones(3, 2))
    queue.enqueue(torch.full((3, 2), 2.0))
    keys, _ = queue.get()
    assert keys.shape == (4, 2)
    assert keys.data_ptr() == queue.keys.data_ptr()


def test_state_dict_round_trip_continues_exactly():
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(3, 4, generator=generator) for _ in range(6)]
    labels = [torch.randint(0, 10, (3,), generator=generator) for _ in range(6)]
    uninterrupted = MemoryQueue(8, 4, with_labels=True)
    for keys, label in zip(batches, labels):
        uninterrupted.enqueue(keys, label)
    first_half = MemoryQueue(8, 4, with_labels=True)
    for keys, label in zip(batches[:2], labels[:2]):
        first_half.enqueue(keys, label)
    state = first_half.state_dict()
    assert set(state) == {"keys", "labels", "pointer", "count"}
    resumed = MemoryQueue(8, 4, with_labels=True)
    resumed.enqueue(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long))  # a full queue before loading
    resumed.get()
    resumed.load_state_dict(state)
    assert resumed.get()[0].shape == (6, 4)  # not the stale "full" view
    for keys, label in zip(batches[2:], labels[2:]):
        resumed.enqueue(keys, label)
    for name, buffer in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], buffer), name


def test_keys_are_detached_and_cast_to_the_queue_dtype():
    online = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    queue = MemoryQueue(4, 3, dtype=torch.float16)
    queue.enqueue(online * 2)
    keys, _ = queue.get()
    assert keys.dtype == torch.float16 and not keys.requires_grad and keys.grad_fn is None
    assert torch.equal(keys, (online.detach() * 2).half())
    assert not any(b.requires_grad for b in queue.buffers())


def test_to_float64_moves_every_buffer_and_keeps_counters_integer():
    queue = MemoryQueue(4, 3, with_labels=True).to(torch.float64)
    assert queue.keys.dtype == torch.float64
    assert queue.labels.dtype == queue.pointer.dtype == queue.count.dtype == torch.long
    queue.enqueue(torch.ones(2, 3), torch.tensor([1, 2]))
    assert queue.get()[0].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_queue_takes_cpu_keys_and_stays_on_the_device():
    queue = MemoryQueue(4, 3, with_labels=True).cuda()
    queue.enqueue(torch.ones(3, 3), torch.tensor([1, 2, 3]))
    queue.enqueue(torch.full((2, 3), 2.0, device="cuda"), torch.tensor([4, 5], device="cuda"))
    keys, labels = queue.get()
    assert keys.is_cuda and labels.is_cuda and queue.pointer.is_cuda
    assert keys[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0] and labels.tolist() == [5, 2, 3, 4]


def test_bad_settings_and_inputs_raise_helpful_errors():
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        MemoryQueue(0, 8)
    with pytest.raises(ConfigError, match="dim must be a positive integer"):
        MemoryQueue(8, 0)
    with pytest.raises(ConfigError, match="floating-point"):
        MemoryQueue(8, 2, dtype=torch.long)
    queue = MemoryQueue(4, 2)
    with pytest.raises(ConfigError, match=r"queue size 4 must be at least the \(global\) batch size 5"):
        queue.enqueue(torch.ones(5, 2))
    with pytest.raises(InputError, match="keys have dim 3"):
        queue.enqueue(torch.ones(2, 3))
    with pytest.raises(InputError, match="with_labels"):
        queue.enqueue(torch.ones(2, 2), torch.tensor([0, 1]))
    labelled = MemoryQueue(4, 2, with_labels=True)
    with pytest.raises(InputError, match="with_labels"):
        labelled.enqueue(torch.ones(2, 2))
    with pytest.raises(InputError, match="got 3 labels for 2 keys"):
        labelled.enqueue(torch.ones(2, 2), torch.tensor([0, 1, 2]))
    assert int(labelled.count) == 0 and int(labelled.pointer) == 0  # a rejected batch writes nothing


def test_overwriting_keys_still_needed_by_backward_raises_instead_of_corrupting_gradients():
    queue = MemoryQueue(4, 2)
    queue.enqueue(torch.ones(4, 2))
    query = torch.ones(3, 2, requires_grad=True)
    keys, _ = queue.get()
    loss = (query @ keys.T).sum()  # saves the key buffer for the gradient of query
    queue.enqueue(torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
