"""Helpers shared by the loss tests: float64 distances from their definitions, finite differences,
and a group of CPU processes for the tests of cross-process statistics."""

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def reference_distance(x, y, distance):
    """Distance between two float64 vectors, straight from its definition."""
    if distance == "cosine":
        return 1 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    squared = np.sum((x - y) ** 2)
    return squared if distance == "squared_euclidean" else np.sqrt(squared)


def numeric_gradients(function, arrays, step=1e-6):
    """Central finite differences of ``function(*arrays)`` with respect to every array."""
    gradients = []
    for array in arrays:
        gradient = np.zeros_like(array)
        for index in np.ndindex(*array.shape):
            original = array[index]
            array[index] = original + step
            upper = function(*arrays)
            array[index] = original - step
            lower = function(*arrays)
            array[index] = original
            gradient[index] = (upper - lower) / (2 * step)
        gradients.append(gradient)
    return gradients


def assert_averaged_over_processes_equal(tensors, expected, world, *, rtol, atol, msg):
    """Average ``tensors`` over the processes, as DDP does to parameter gradients and a logger to
    the loss, and compare them with the one-process ``expected``."""
    for tensor, reference in zip(tensors, expected):
        dist.all_reduce(tensor)
        torch.testing.assert_close(tensor / world, reference, rtol=rtol, atol=atol, msg=msg)


def run_in_process_group(tmp_path, worker, *args, world=2):
    """Run ``worker(rank, world, *args)`` in ``world`` processes joined in a gloo group (CPU).

    ``worker`` must be a module-level function (the processes are spawned, not forked)."""
    mp.spawn(_in_group, args=(world, str(tmp_path / "init"), worker, args), nprocs=world)


def _in_group(rank, world, init_file, worker, args):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        worker(rank, world, *args)
        # A process leaving the group while another still works in it (rank 0 writing a checkpoint)
        # can abort in gloo's threads: leave together.
        dist.barrier()
    finally:
        dist.destroy_process_group()

