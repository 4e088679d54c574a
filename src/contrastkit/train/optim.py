"""Optimizers: SGD and AdamW (torch's fused kernels), and LARS for large-batch SSL."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError


class SGD(torch.optim.SGD):
    """torch's SGD, with a momentum buffer for every parameter from the first step on.

    torch's fused SGD kernel assumes that either no parameter or every parameter with a gradient
    already has a momentum buffer. A parameter whose first gradient comes after the first step
    (SwAV's prototypes and DINO's last layer, frozen for the first epoch) breaks that and stops
    the run with ``TypeError: expected Tensor as element N``. Creating zero buffers up front
    changes nothing else: with dampening 0 the first update sets a zero buffer to the gradient,
    exactly as torch's lazily created one.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> optimizer = SGD(net.parameters(), lr=0.1, momentum=0.9, fused=True)
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, fused: bool | None = None) -> None:
        if momentum and dampening:
            raise ConfigError(f"contrastkit's SGD takes dampening 0 with momentum, got {dampening}; the SSL "
                              "recipes never dampen.")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, fused=fused)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            if group["momentum"]:
                for param in group["params"]:
                    state = self.state[param]
                    if state.get("momentum_buffer") is None:
                        # Made here, not in __init__, so it takes the parameter's current memory
                        # format (the trainer may convert the model to channels_last after this).
                        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return super().step(closure)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as used by SimCLR,
    BYOL, Barlow Twins and VICReg for large batches.

    Each weight's update is scaled by ``trust_coefficient * ||w|| / ||g + weight_decay * w||``.
    Parameters with one dimension (biases, batch-norm affine) get neither weight decay nor
    adaptation, following the SimCLR and BYOL recipes. The step runs as a handful of multi-tensor
    (``torch._foreach_*``) kernels per parameter group, not a few kernels per parameter.

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
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            updates = [param.grad for param in params]
            adapted = [index for index, param in enumerate(params) if param.ndim > 1]
            if adapted:
                weights = [params[index] for index in adapted]
                decayed = torch._foreach_add([updates[index] for index in adapted], weights,
                                             alpha=group["weight_decay"])
                param_norms = torch.stack(torch._foreach_norm(weights))
                update_norms = torch.stack(torch._foreach_norm(decayed))
                # Where either norm is zero (fresh zero-init layers), fall back to a plain step.
                ratios = torch.where((param_norms > 0) & (update_norms > 0),
                                     group["trust_coefficient"] * param_norms / (update_norms + group["eps"]),
                                     torch.ones_like(param_norms))
                torch._foreach_mul_(decayed, ratios.unbind())
                for index, update in zip(adapted, decayed):
                    updates[index] = update
            self._momentum_step(params, updates, group)
        return loss

    def _momentum_step(self, params: list[Tensor], updates: list[Tensor], group: dict) -> None:
        fresh = [index for index, param in enumerate(params) if "momentum_buffer" not in self.state[param]]
        for index in fresh:
            self.state[params[index]]["momentum_buffer"] = updates[index].clone()
        seen = set(fresh)
        old = [index for index in range(len(params)) if index not in seen]
        if old:
            buffers = [self.state[params[index]]["momentum_buffer"] for index in old]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, [updates[index] for index in old])
        torch._foreach_add_(params, [self.state[param]["momentum_buffer"] for param in params], alpha=-group["lr"])


def create_optimizer(name: str, parameters: Iterable[nn.Parameter], *, lr: float, momentum: float = 0.9,
                     weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` (with momentum), ``adamw`` or ``lars``.

    SGD and AdamW use torch's fused kernels on every device (CPU and CUDA alike, so the CPU test
    suite runs the code path a GPU runs).

    Example:
        >>> optimizer = create_optimizer("sgd", nn.Linear(4, 2).parameters(), lr=0.1)
    """
    params = list(parameters)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose sgd, adamw or lars.")
