"""Small argument checks shared by the library's public functions."""

from __future__ import annotations

import torch

from contrastkit.errors import InputError


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise InputError if ``tensor`` holds NaN or infinity.

    Costs one device-to-host sync, so hot paths call it only where a silent NaN would be worse.
    """
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(
            f"{name} holds {bad} NaN/inf value(s) (shape {tuple(tensor.shape)}); "
            "check the inputs and the learning rate, or enable anomaly detection to find their source."
        )


def check_ndim(name: str, tensor: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise InputError unless ``tensor`` has ``ndim`` dimensions (``layout`` names them, e.g. "(N, D)")."""
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}.")
    if tensor.ndim != ndim:
        raise InputError(
            f"{name} must have shape {layout}, got {tuple(tensor.shape)}; "
            f"reshape it to {ndim} dimensions."
        )


def check_paired_embeddings(loss: str, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("z_a", "z_b"),
                            *, min_batch: int = 1, validate: bool = True) -> None:
    """Check two row-aligned (batch, dim) embeddings: same shape, at least ``min_batch`` rows, and
    (with ``validate``) finite. ``loss`` names the caller in the messages."""
    check_ndim(names[0], a, 2, "(batch, dim)")
    check_ndim(names[1], b, 2, "(batch, dim)")
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape (batch, dim); got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")
    if a.shape[0] < min_batch:
        raise InputError(f"{loss} got an empty batch." if a.shape[0] == 0 else
                         f"{loss} needs a batch of at least {min_batch} samples, got {a.shape[0]}.")
    if validate:
        check_finite(names[0], a)
        check_finite(names[1], b)

