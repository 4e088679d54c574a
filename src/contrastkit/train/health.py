"""Watching the embeddings while a run trains: the health metrics of the method's embeddings (its
projection head's outputs, :meth:`contrastkit.methods.Method.embedding_module`) at logged steps
(:mod:`contrastkit.evaluate.health`), and a warning, or a stop, when they say the embeddings
collapsed or are collapsing.

The metrics read what the step's own views gave, so they cost no forward pass of their own: a
forward hook keeps the module's outputs during the steps before a log line only, and the metrics
are read back with the loss, after the interval's host sync.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.errors import ContrastkitError
from contrastkit.evaluate.health import collapse_state, embedding_std, health_metrics, rankme, rankme_fraction

# What to change, per method, when its embeddings collapse; every method also gets GENERAL_ADVICE.
GENERAL_ADVICE = ("a lower learning rate (lr or lr_per_256) or a warm-up (warmup_epochs)",
                  "stronger augmentation (a stronger preset, or preset_options)")
METHOD_ADVICE = {
    "simclr": ("a higher temperature",),
    "supcon": ("a higher temperature",),
    "moco_v2": ("a higher temperature", "ema_momentum closer to 1 (method_options)"),
    "moco_v3": ("a higher temperature", "ema_momentum closer to 1 (method_options)"),
    "byol": ("keep the predictor (method_options.predictor_hidden_dim) and its stop-gradient",
             "ema_momentum closer to 1 (method_options)"),
    "simsiam": ("keep the predictor (method_options.predictor_hidden_dim) and its stop-gradient",
                "weight_decay, which SimSiam needs"),
    "barlow_twins": ("a smaller method_options.lambda_offdiag", "the LARS optimizer (optimizer=lars)"),
    "vicreg": ("a larger method_options.variance_weight", "the LARS optimizer (optimizer=lars)"),
    "swav": ("longer frozen prototypes (method_options.freeze_prototypes_epochs)",),
    "dino": ("a lower teacher temperature (method_options.teacher_temperature) with its warm-up",
             "longer frozen last layer (method_options.freeze_last_layer_epochs)"),
}


class TrainingCollapsed(ContrastkitError):
    """The embeddings collapsed and ``stop_on_collapse`` asked to stop."""


class HealthProbe:
    """Keeps the outputs ``module`` gives while armed, and makes them the step's view embeddings.

    Args:
        module: the online module whose outputs are the embeddings (momentum copies are other
            modules and are not watched).
    """

    def __init__(self, module: nn.Module) -> None:
        self.armed = False
        self.dim = 0  # the embeddings' width, known once metrics were taken
        self._outputs: list[Tensor] = []
        self._hook = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.armed and isinstance(output, Tensor) and output.ndim >= 2:
            # (N, D), or (N, ..., D) pooled over the middle (a series encoder's time steps).
            rows = output.detach().float()
            self._outputs.append(rows.mean(dim=tuple(range(1, rows.ndim - 1))) if rows.ndim > 2 else rows)

    def metrics(self, rows: int) -> dict[str, Tensor]:
        """The health metrics of what was kept since arming, as views of ``rows`` samples (the
        outputs in call order: views of one batch, together or one pass each), and disarms. Device
        tensors: read them back with the loss. Empty if the backbone gave no (N, D) output."""
        outputs, self._outputs, self.armed = self._outputs, [], False
        views = [view for view in torch.cat(outputs).split(rows) if view.shape[0] == rows] if outputs else []
        if not views or rows < 2:
            return {}
        self.dim = views[0].shape[1]
        if len(views) == 1:  # one view of the backbone (image-text: the other side is another tower)
            view = views[0]
            return {"embedding_std": embedding_std(view), "rankme": rankme(view),
                    "rankme_fraction": rankme_fraction(view)}
        return health_metrics(views)

    def remove(self) -> None:
        self._hook.remove()


class CollapseMonitor:
    """Judges each logged step's health metrics (:func:`contrastkit.evaluate.collapse_state`) and
    warns when the verdict worsens, naming what to change for ``method``; with ``stop`` a
    collapsed verdict raises :class:`TrainingCollapsed`.

    Args:
        method: the method's registry name, for its advice.
        stop: raise on "collapsed" (``stop_on_collapse``) instead of warning.
        grace_steps: steps before the first verdict: a network at initialisation often maps every
            input near one direction until training spreads it.
    """

    def __init__(self, method: str, *, stop: bool = False, grace_steps: int = 0) -> None:
        self.method = method
        self.stop = stop
        self.grace_steps = grace_steps
        self.state = "healthy"

    def advice(self) -> str:
        return "; ".join(METHOD_ADVICE.get(self.method, ()) + GENERAL_ADVICE)

    def check(self, values: dict[str, float], dim: int, step: int, kept: str) -> str:
        """The verdict on ``values`` (floats) at ``step``; ``kept`` says which checkpoint holds the
        last good state, for the stop's message."""
        judged = {key: values[key] for key in ("embedding_std", "rankme", "rankme_fraction") if key in values}
        if step < self.grace_steps or not judged or not all(math.isfinite(value) for value in judged.values()):
            return self.state  # no verdict from NaN (a diverged loss is reported as such, first)
        state = collapse_state(judged, dim)
        order = ("healthy", "collapsing", "collapsed")
        if order.index(state) > order.index(self.state):
            summary = ", ".join(f"{key} {values[key]:.3g}" for key in ("embedding_std", "rankme") if key in values)
            message = (f"the embeddings look {state} at step {step} ({summary}; healthy embedding_std is about "
                       f"{dim ** -0.5:.3g}). For {self.method}, try: {self.advice()}.")
            if state == "collapsed" and self.stop:
                raise TrainingCollapsed(f"{message} Stopped (stop_on_collapse=true); {kept}.")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.state = state
        return state
