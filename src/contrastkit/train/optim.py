"""Optimizers: SGD, AdamW (torch's, fused on CUDA) and LARS for large-batch SSL."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from contrastkit.errors import ConfigError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as used by SimCLR,
    BYOL and Barlow Twins for large batches.

    Each weight's update is scaled by ``trust_coefficient * ||w|| / ||g + weight_decay * w||``.
    Parameters with one dimension (biases, batch-norm affine) get neither weight decay nor
    adaptation, following the SimCLR and BYOL recipes.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> optimizer = LARS(net.parameters(), lr=0.3, weight_decay=1e-6)
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 0.001, eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ConfigError(f"LARS lr must be > 0, got {lr}.")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(update)
                    # Where either norm is zero (fresh zero-init layers), fall back to a plain step.
                    ratio = torch.where((param_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * param_norm / (update_norm + group["eps"]),
                                        torch.ones_like(param_norm))
                    update = update.mul(ratio)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def create_optimizer(name: str, parameters: Iterable[nn.Parameter], *, lr: float, momentum: float = 0.9,
                     weight_decay: float = 0.0, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """``sgd`` (with momentum), ``adamw`` or ``lars``; torch's fused kernels are used on CUDA."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    params = list(parameters)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose sgd, adamw or lars.")
