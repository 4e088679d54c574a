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
