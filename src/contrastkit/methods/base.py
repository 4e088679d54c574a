"""The contract every method module keeps, so the trainer (or a user's own loop) can drive any of them.

A user's loop, the same one :class:`contrastkit.train.Trainer` runs::

    for step in range(total_steps):
        progress = Progress(step, total_steps, steps_per_epoch)
        model.on_step_start(progress)             # schedules: temperatures, prototype normalisation
        loss = model.training_step(views, labels)["loss"]
        loss.backward()
        model.on_before_optimizer_step(progress)  # gradient edits: frozen prototypes or last layer
        optimizer.step(); optimizer.zero_grad()
        model.on_step_end(progress)               # momentum (teacher) encoder update

The hooks default to doing nothing, so SimCLR-like methods need only ``training_step``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from contrastkit.augment import MultiView, multicrop
from contrastkit.errors import ConfigError
from contrastkit.models.momentum import cosine_momentum, ema_update


@dataclass(frozen=True)
class Progress:
    """Where training stands at an optimizer step; schedules are functions of it."""

    step: int  # 0-based optimizer step
    total_steps: int
    steps_per_epoch: int

    @property
    def epoch(self) -> float:
        """Epochs completed so far, fractional (0.5 = half-way through the first epoch)."""
        return self.step / self.steps_per_epoch

    @property
    def fraction(self) -> float:
        """Share of the run completed, in [0, 1)."""
        return self.step / self.total_steps


View = Union[Tensor, Mapping[str, Tensor]]


def _shape(view: View) -> Any:
    """What must match for views to share a forward pass: the tensor's shape, or every key's."""
    if isinstance(view, Tensor):
        return view.shape
    return tuple((key, value.shape) for key, value in sorted(view.items()))


def view_rows(view: View) -> int:
    """The samples in a view: an image tensor's rows, or a token dict's."""
    return view.shape[0] if isinstance(view, Tensor) else next(iter(view.values())).shape[0]


def _concatenate(views: Sequence[View]) -> View:
    if isinstance(views[0], Tensor):
        return torch.cat(list(views))
    return {key: torch.cat([view[key] for view in views]) for key in views[0]}


def forward_views(module: Callable[[Any], Tensor], views: Sequence[View], *, together: bool = True) -> list[Tensor]:
    """``module`` applied to each view, by default running consecutive views of one shape as a
    single batch.

    A view is an image tensor or a dict of tensors (a tokenized text batch: ``input_ids``,
    ``attention_mask``, ...). Which of the two a method takes is what its reference code does, and
    it matters wherever the module has batch norm: its statistics are those of the batch it sees.

    Args:
        module: the encoder (backbone and heads) to apply.
        views: the views of one batch, each with the same samples in the same order.
        together: run consecutive views of one shape as one batch, so batch norm normalises over
            all of them (SimCLR's, SupCon's, SwAV's and DINO's reference code: multi-crop's global
            and local crops form two groups), and feed the device larger batches; SimCSE's two
            copies of a sentence batch go through together with their own dropout masks. False: one
            pass per view, each normalised by its own statistics (the reference code of MoCo,
            BYOL, SimSiam, Barlow Twins and VICReg).

    Returns:
        One output per view, in the views' order.
    """
    if not together:
        return [module(view) for view in views]
    outputs: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and _shape(views[end]) == _shape(views[start]):
            end += 1
        outputs.extend(module(_concatenate(views[start:end])).split(view_rows(views[start])))
        start = end
    return outputs


def head_output_dim(head: nn.Module) -> int:
    """The width of a head's output: the ``out_features`` of its last linear layer."""
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot tell the output width of a {type(head).__name__} head without a linear "
                          "layer; use a linear or MLP head.")
    return linears[-1].out_features


def require_two_views(views: Sequence[Tensor], method: str) -> None:
    """Refuse anything but two views, for the methods built on one pair of views."""
    if len(views) != 2:
        raise ConfigError(f"{method} trains on exactly two views, got {len(views)}; use a two-view preset "
                          "(no local crops).")


def require_multiple_views(method: str, views: Any) -> Any:
    """``views`` if it makes two or more views of each sample, which every method but the
    image-text ones contrasts; otherwise a ConfigError naming the fix."""
    transforms = views.views if isinstance(views, MultiView) else getattr(views, "transforms", None)
    if transforms is not None and len(transforms) < 2:
        raise ConfigError(f"{method} contrasts two or more views of each sample, but its augmentation makes "
                          f"{len(transforms)}; choose a preset that makes two (leave preset unset for the dataset's "
                          "own; `contrastkit list` shows them).")
    return views


def with_local_crops(views: MultiView, num_local_crops: int, local_crop_size: int | None) -> MultiView:
    """``views`` plus ``num_local_crops`` multi-crop local views (none: ``views`` unchanged)."""
    if not num_local_crops:
        return views
    return multicrop(views, num_local=num_local_crops, local_size=local_crop_size)


class Method(nn.Module):
    """Base of the self-supervised methods: a backbone plus whatever the method trains beside it.

    Subclasses set ``backbone`` (its features are the representation evaluated downstream), implement
    ``training_step`` and ``from_config``, and declare:

    * ``requires_labels``: the method needs class labels (SupCon);
    * ``modalities``: the names of the registered modalities it trains on (``"image"``, ``"text"``,
      ``"image_text"``, ``"series"``; :mod:`contrastkit.modalities`);
    * ``sync_batchnorm``: whether, on several processes, batch norm should see the global batch
      by default (the papers that train with global batch norm);
    * ``views_share_batch_norm``: whether the views of one shape go through the encoder as one
      batch, batch norm normalising over all of them, or one pass per view, as the method's
      reference code does (:func:`forward_views`); set it on an instance to train the other way;
    * ``default_options``: the method's own settings with their defaults (``method_options`` in a
      config), e.g. MoCo's queue size;
    * ``recipes``: config values filled in where the user left a key unset, under the key the
      run's modality gives (``Modality.recipe_key``): CIFAR-size (``"small"``, side <= 64) and
      ImageNet-size (``"large"``) images, else the modality's name (``"text"``, ``"series"``).

    A view is whatever the modality's augmentation makes (an image tensor, a dict of token
    tensors); the backbone takes it as it is.
    """

    requires_labels: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    sync_batchnorm: ClassVar[bool] = False
    views_share_batch_norm: bool = True
    default_options: ClassVar[dict[str, Any]] = {}
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"small": {}, "large": {}}

    backbone: nn.Module

    def forward(self, batch: Any) -> Tensor:
        """Backbone features (the representation used downstream)."""
        return self.backbone(batch)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        """Losses of one batch given its augmented views; ``"loss"`` is the one to minimise."""
        raise NotImplementedError

    def embedding_module(self) -> nn.Module | None:
        """The online module whose outputs are the embeddings the loss compares, which the health
        metrics watch while training (:mod:`contrastkit.train.health`): the projection head where
        the method has one, else the backbone (None if it has neither)."""
        for name in ("projection_head", "backbone"):
            module = getattr(self, name, None)
            if isinstance(module, nn.Module):
                return module
        return None

    def encode_views(self, module: Callable[[Any], Tensor], views: Sequence[View]) -> list[Tensor]:
        """``module`` on each view, as one batch per shape or one pass per view as
        ``views_share_batch_norm`` says (:func:`forward_views`)."""
        return forward_views(module, views, together=self.views_share_batch_norm)

    def on_step_start(self, progress: Progress) -> None:
        """Before the forward pass of an optimizer step."""

    def on_before_optimizer_step(self, progress: Progress) -> None:
        """After backward, before the optimizer uses the gradients."""

    def on_step_end(self, progress: Progress) -> None:
        """After the optimizer step."""

    def configure_views(self, views: MultiView) -> MultiView:
        """The augmentation this method trains on, given the dataset's preset (multi-crop methods
        derive their local crops from it); refused if it makes fewer than two views."""
        return require_multiple_views(type(self).__name__, views)

    @classmethod
    def options(cls, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``default_options`` updated with ``overrides``; unknown keys are refused with a suggestion."""
        overrides = dict(overrides or {})
        for key in overrides:
            if key not in cls.default_options:
                close = difflib.get_close_matches(key, cls.default_options, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(cls.default_options)) or "none"
                raise ConfigError(f"unknown method option {key!r} for {cls.__name__}{hint} "
                                  f"Its options: {known}.")
        return {**cls.default_options, **overrides}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "Method":
        """Build from a resolved :class:`contrastkit.config.Config`: by default its projector sizes
        (``hidden_dim`` defaulting to the backbone's width, ``projection_dim``) and method options."""
        return cls(backbone, hidden_dim=config.hidden_dim or backbone.feature_dim,
                   projection_dim=config.projection_dim, **cls.options(config.method_options))


class MomentumMethod(Method):
    """A method with momentum (EMA) copies of some of its modules: MoCo's key encoder, BYOL's target,
    DINO's teacher. After every optimizer step each copy moves towards its online module with
    momentum m rising from ``ema_momentum`` to ``ema_momentum_final`` on BYOL's cosine schedule
    (equal values give a constant momentum, as in MoCo v2)."""

    def _set_momentum(self, ema_momentum: float, ema_momentum_final: float) -> None:
        if not 0.0 <= ema_momentum <= ema_momentum_final <= 1.0:
            raise ConfigError(f"EMA momentum must satisfy 0 <= ema_momentum <= ema_momentum_final <= 1, got "
                              f"{ema_momentum} and {ema_momentum_final}; typical values are 0.99 to 0.996 "
                              "rising to 1.0.")
        self.ema_momentum = ema_momentum
        self.ema_momentum_final = ema_momentum_final

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(momentum copy, online module) pairs to update after each step."""
        raise NotImplementedError

    def on_step_end(self, progress: Progress) -> None:
        momentum = cosine_momentum(progress.step, progress.total_steps, self.ema_momentum, self.ema_momentum_final)
        for target, online in self.momentum_pairs():
            ema_update(target, online, momentum)
