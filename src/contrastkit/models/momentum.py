"""Momentum (exponential moving average) target networks: MoCo's key encoder, BYOL's target, DINO's teacher.

The target starts as a copy of the online network (:func:`momentum_copy`), is never given to an
optimizer, and after every step moves towards the online weights (:func:`ema_update`), with a
momentum that BYOL and DINO raise towards 1 over training (:func:`cosine_momentum`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from contrastkit.errors import ConfigError


def _check_momentum(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}; momentum encoders use 0.99 to 0.9999.")
    return float(value)


def _matched(kind: str, target: dict[str, torch.Tensor], online: dict[str, torch.Tensor]) -> None:
    """Raise ConfigError naming the first entry that the two networks do not share in name, shape and dtype."""
    for name in [*online, *target]:
        if name not in target or name not in online:
            side = "target" if name not in target else "online"
            raise ConfigError(f"the {side} network has no {kind} {name!r}; build the target with "
                              "momentum_copy(online) so both have the same architecture.")
        t, o = target[name], online[name]
        if t.shape != o.shape or t.dtype != o.dtype:
            raise ConfigError(f"{kind} {name!r} differs: target {tuple(t.shape)} {t.dtype} vs online "
                              f"{tuple(o.shape)} {o.dtype}; build the target with momentum_copy(online).")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Move ``target`` towards ``online`` in place: t <- m * t + (1 - m) * o for every floating parameter.

    Buffers (batch-norm running statistics, ``num_batches_tracked``) are copied from ``online``.

    Args:
        target: the momentum network, usually made with :func:`momentum_copy`.
        online: the network trained by the optimizer; same parameter names, shapes and dtypes.
        momentum: m in [0, 1]; 1 leaves the target unchanged, 0 copies the online weights.

    Example:
        >>> online = nn.Linear(4, 2)
        >>> target = momentum_copy(online)
        >>> ema_update(target, online, momentum=0.99)
    """
    m = _check_momentum("momentum", momentum)
    target_params, online_params = dict(target.named_parameters()), dict(online.named_parameters())
    _matched("parameter", target_params, online_params)
    target_buffers, online_buffers = dict(target.named_buffers()), dict(online.named_buffers())
    _matched("buffer", target_buffers, online_buffers)
    floating = [name for name, p in target_params.items() if p.is_floating_point()]
    if floating:
        # lerp: t + (1 - m) * (o - t), one fused call over all parameters.
        torch._foreach_lerp_([target_params[n] for n in floating], [online_params[n] for n in floating], 1.0 - m)
    for name, p in target_params.items():
        if not p.is_floating_point():
            p.copy_(online_params[name])
    if target_buffers:
        torch._foreach_copy_(list(target_buffers.values()), [online_buffers[n] for n in target_buffers])


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """BYOL's momentum schedule: m = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2.

    Rises from ``base`` at step 0 to ``final`` at ``total_steps`` and stays there afterwards.

    Args:
        step: the current optimisation step, >= 0.
        total_steps: steps of the whole run, >= 1.
        base: momentum at step 0 (BYOL: 0.996, MoCo v3: 0.99, DINO: 0.996).
        final: momentum at the end (1.0 in BYOL and DINO).

    Example:
        >>> cosine_momentum(0, 100), cosine_momentum(100, 100)
        (0.99, 1.0)
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}.")
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}.")
    base, final = _check_momentum("base momentum", base), _check_momentum("final momentum", final)
    progress = min(step, total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters do not require grad: the target / teacher network.

    It shares no storage with ``module`` and is updated only by :func:`ema_update`.

    Args:
        module: the online network.

    Example:
        >>> target = momentum_copy(nn.Linear(4, 2))
        >>> any(p.requires_grad for p in target.parameters())
        False
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target
