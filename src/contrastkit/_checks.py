"""Small argument checks shared by the library's public functions."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from contrastkit.errors import ConfigError, InputError


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


# The largest logit scale (1/temperature) the CLIP and SigLIP losses take: ten times CLIP's cap of
# 100, leaving room for SigLIP, which learns its scale without a cap. So the scales in use pass,
# while a scale given where its log belongs (SigLIP's 10, CLIP's 1/0.07 = 14.3 or 100, as
# open_clip's losses take it) is refused before exp() makes it e^10 or more: e^s is inf in float32
# from s = 88.7, and the loss NaN (inf - inf, in the similarity sums and the softmax).
MAX_LOGIT_SCALE = 1000.0


def check_log_scale(loss: str, name: str, log_scale: torch.Tensor) -> None:
    """Raise InputError unless the 0-dim ``log_scale`` is finite and at most log(MAX_LOGIT_SCALE).

    Costs one device-to-host sync. ``loss`` names the caller in the message.
    """
    value = float(log_scale.detach())
    if not math.isfinite(value):
        check_finite(name, log_scale)  # raises, with the message every non-finite tensor gets
    # float32 rounds log(1000) up by one unit in the last place; that is still the cap.
    limit = math.log(MAX_LOGIT_SCALE)
    if value > limit * (1 + torch.finfo(torch.float32).eps):
        overflow = " (inf in float32)" if value > math.log(torch.finfo(torch.float32).max) else ""
        raise InputError(f"{loss} got {name} = {value:g}, a logit scale of e^{value:g}{overflow}: {name} is the log "
                         f"of the scale (log 1/temperature), at most log({MAX_LOGIT_SCALE:g}) = {limit:.4f}; for a "
                         f"scale of {value:g} pass math.log({value:g}) = {math.log(value):.4f}.")


def check_ndim(name: str, tensor: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise InputError unless ``tensor`` has ``ndim`` dimensions (``layout`` names them, e.g. "(N, D)")."""
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}.")
    if tensor.ndim != ndim:
        raise InputError(
            f"{name} must have shape {layout}, got {tuple(tensor.shape)}; "
            f"reshape it to {ndim} dimensions."
        )


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """Raise InputError unless ``tensor`` is floating point.

    The losses cast their inputs to float32 themselves, so an integer or bool tensor would go
    through without an error, as rounded or 0/1 embeddings: almost always a mix-up of arguments.
    """
    if not tensor.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {tensor.dtype}; convert with .float().")


def check_embeddings(name: str, tensor: torch.Tensor, layout: str = "(batch, dim)") -> None:
    """Raise InputError unless ``tensor`` is a 2-dim floating-point tensor (``layout`` names its dims)."""
    check_ndim(name, tensor, 2, layout)
    check_floating(name, tensor)


def check_class_labels(name: str, labels: torch.Tensor) -> None:
    """Raise InputError if ``labels`` is floating point or complex: class ids are compared for
    equality, which rounding makes unreliable. Integer and bool labels pass."""
    if labels.is_floating_point() or labels.is_complex():
        raise InputError(f"{name} must hold integer class ids, got dtype {labels.dtype}; "
                         f"convert them with {name}.long().")


def check_batch_size(loss: str, batch: int, minimum: int = 1, reason: str = "", *, unit: str = "samples",
                     processes: int = 1) -> None:
    """Raise InputError for an empty batch, or one with fewer than ``minimum`` ``unit`` in all.

    A loss that combines every process's batch (a gather, or statistics summed across processes)
    passes ``processes``: the rule is on the global batch, ``batch * processes``, so one sample per
    process can be enough. With ``minimum`` > 1, ``reason`` says why fewer samples mean nothing,
    and the fix.
    """
    if batch == 0:
        raise InputError(f"{loss} got an empty batch, which has no loss to average; check what feeds it "
                         "(a filter or a last batch that came out empty).")
    if batch * processes < minimum:
        raise InputError(f"{loss} needs at least {minimum} {unit}, got {batch * processes}: {reason}")


def _is_number(value: object) -> bool:
    # bool is an int subclass, but temperature=True is a mistake, not 1.0.
    return isinstance(value, Real) and not isinstance(value, bool)


def check_positive(name: str, value: float, hint: str, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``).

    ``value <= 0`` would let NaN through (every comparison with NaN is False), and an infinite
    temperature or margin gives a constant, infinite or NaN loss, so both are refused here.
    ``hint`` gives the usual values.
    """
    bound = ">= 0" if allow_zero else "> 0"
    if not (_is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ConfigError(f"{name} must be {bound} and finite, got {value!r}; {hint}")


def check_finite_number(name: str, value: float, hint: str) -> None:
    """Raise ConfigError unless ``value`` is a finite number (for options of any sign, e.g. a bias)."""
    if not (_is_number(value) and math.isfinite(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}; {hint}")


def check_count(name: str, value: int, minimum: int, hint: str) -> None:
    """Raise ConfigError unless ``value`` is an integer >= ``minimum`` (a count: iterations, k, a size)."""
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{name} must be >= {minimum} (an integer), got {value!r}; {hint}")


def check_paired_embeddings(loss: str, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("z_a", "z_b"),
                            *, min_batch: int = 1, reason: str = "", processes: int = 1,
                            validate: bool = True) -> None:
    """Check two row-aligned (batch, dim) floating-point embeddings: same shape, at least
    ``min_batch`` rows in the global batch (see :func:`check_batch_size`, which ``reason`` and
    ``processes`` go to), and (with ``validate``) finite. ``loss`` names the caller in the messages."""
    check_embeddings(names[0], a)
    check_embeddings(names[1], b)
    if a.shape != b.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape (batch, dim); got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")
    check_batch_size(loss, a.shape[0], min_batch, reason, processes=processes)
    if validate:
        check_finite(names[0], a)
        check_finite(names[1], b)

