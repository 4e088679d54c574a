"""The precision every loss computes in: float32 (float64 for float64 inputs), autocast or not."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor


def loss_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 inputs, else float32: softmax over large logits needs at least float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def full_precision(x: Tensor) -> Iterator[None]:
    """Turn autocast off on ``x``'s device: under it a matmul of float32 inputs still runs in bf16."""
    with torch.autocast(x.device.type, enabled=False):
        yield
