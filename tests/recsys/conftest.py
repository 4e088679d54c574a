"""Helpers of the recommender tests."""

import numpy as np
import pytest
import torch


def write_ratings(path, users=40, items=30, seed=0, header="user_id,item_id,rating,timestamp"):
    """A CSV of random distinct (user, item) pairs, 5 to 20 per user, with ratings and times."""
    rng = np.random.default_rng(seed)
    lines = [header] if header else []
    for user in range(users):
        for item in rng.choice(items, size=rng.integers(5, min(21, items + 1)), replace=False):
            lines.append(f"u{user},i{item},{rng.integers(1, 6)},{rng.integers(0, 10**6)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ratings():
    """Write a random ratings CSV: ``ratings(path, users=40, items=30, seed=0, header=...)``."""
    return write_ratings


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread while a test runs: sparse products on a shared, busy CPU run several times
    slower on two threads than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
