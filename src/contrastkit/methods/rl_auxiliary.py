"""CURL's and ATC's contrastive auxiliary losses for pixel-based RL agents.

Both add an InfoNCE term to an agent's loss, so that its observation encoder learns from every
frame it sees, not only from the rewards. Anchors a_i come from the agent's (online) encoder, keys
k_i from a momentum copy of it, and a learned matrix W scores every pair bilinearly:

    logits_ij = a_i W k_j^T - max_j' a_i W k_j'^T,      L = 1/N sum_i -log softmax_j(logits_ij)[j = i]

the key of the same observation (j = i) being the positive and the other keys of the batch the
negatives. The keys carry no gradient: the encoder and W learn, the key encoder only follows the
encoder by an exponential moving average (:func:`contrastkit.models.momentum.ema_update`). The
per-row max is subtracted for numerical range, as in CURL's reference code; it changes neither the
loss nor its gradients.

* :class:`CURLAuxiliaryLoss` (Srinivas et al., 2020): the anchor and the positive are two random
  crops of the same frame stack (:class:`contrastkit.augment.frames.RandomCrop`); key encoder
  momentum 0.95 (CURL's ``encoder_tau`` 0.05).
* :class:`ATCAuxiliaryLoss` (Stooke et al., 2021, Augmented Temporal Contrast): the anchor is the
  observation at time t, the positive the one at t + k of the same episode, both randomly shifted
  (:class:`contrastkit.augment.frames.RandomShift`); a linear contrast head compresses the
  features, and a residual MLP predicts the positive's code from the anchor's; the target encoder
  and head follow with momentum 0.99.

:func:`contrastkit.losses.bilinear_info_nce` is the loss on given embeddings. The modules hold the agent's encoder
(so their ``parameters()`` include it: give them to the optimizer that trains the encoder) and their
momentum copies, which never get a gradient; call ``update_target()`` after each optimizer step.

Example (the lines an agent adds to its update; its encoder maps frames to 32 features):
    >>> from torch import nn
    >>> from contrastkit.augment.frames import RandomCrop
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Conv2d(9, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9 * 9, 32))
    >>> curl = CURLAuxiliaryLoss(encoder, feature_dim=32)
    >>> optimizer = torch.optim.Adam(curl.parameters(), lr=1e-3)
    >>> obs = torch.randint(0, 256, (16, 9, 24, 24), dtype=torch.uint8)  # a replay batch, 3 RGB frames
    >>> crop, generator = RandomCrop(20), torch.Generator().manual_seed(0)
    >>> anchor, positive = (crop(obs, generator).float() / 255 for _ in range(2))
    >>> loss = curl(anchor, positive)  # add it to the agent's loss, or step it alone as CURL does
    >>> loss.backward(); optimizer.step(); curl.update_target()
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastkit._checks import check_count
from contrastkit.errors import InputError
from contrastkit.losses.curl import bilinear_info_nce
from contrastkit.models.momentum import _check_momentum, ema_update, momentum_copy

__all__ = ["ATCAuxiliaryLoss", "CURLAuxiliaryLoss"]


def _features(name: str, module: nn.Module, observations: Tensor, dim: int) -> Tensor:
    """``module(observations)``, refused unless it is (N, dim)."""
    features = module(observations)
    if not (isinstance(features, Tensor) and features.ndim == 2 and features.shape[1] == dim):
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise InputError(f"the {name} returned {shape}, not (batch, {dim}); pass feature_dim= the size of its "
                         "output, and flatten it to (batch, features).")
    return features


class CURLAuxiliaryLoss(nn.Module):
    """CURL's auxiliary loss: bilinear InfoNCE between two crops of the same frame stacks.

    Args:
        encoder: the agent's observation encoder, frames -> (N, feature_dim); trained by this loss.
        feature_dim: the size of the encoder's output.
        momentum: EMA momentum of the key encoder in [0, 1] (CURL: 0.95, i.e. encoder_tau 0.05).
        key_encoder: the momentum encoder of the keys; None (default) makes one with
            :func:`contrastkit.models.momentum.momentum_copy`. Pass the critic target's encoder to
            share it, as CURL's SAC does, and then update it only through :meth:`update_target`.

    Example:
        >>> curl = CURLAuxiliaryLoss(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16)), feature_dim=16)
        >>> curl(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)).shape
        torch.Size([])
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, momentum: float = 0.95,
                 key_encoder: nn.Module | None = None) -> None:
        super().__init__()
        check_count("feature_dim", feature_dim, 1, "it is the size of the encoder's output, e.g. 50 in CURL.")
        self.feature_dim = int(feature_dim)
        self.momentum = _check_momentum("momentum", momentum)
        self.encoder = encoder
        self.key_encoder = momentum_copy(encoder) if key_encoder is None else key_encoder
        # CURL initialises W uniformly in [0, 1).
        self.W = nn.Parameter(torch.rand(self.feature_dim, self.feature_dim))

    def forward(self, obs_anchor: Tensor, obs_positive: Tensor, *, validate: bool = True) -> Tensor:
        """The loss of anchors ``obs_anchor`` against keys of ``obs_positive`` (two views, row-aligned).

        Args:
            obs_anchor, obs_positive: two augmented views (N, ...) of the same N observations.
            validate: check the embeddings are finite (one host sync each).
        """
        anchors = _features("encoder", self.encoder, obs_anchor, self.feature_dim)
        with torch.no_grad():
            keys = _features("key encoder", self.key_encoder, obs_positive, self.feature_dim)
        return bilinear_info_nce(anchors, keys, self.W, validate=validate)

    def update_target(self) -> None:
        """Move the key encoder towards the encoder (EMA with ``momentum``); call after each step."""
        ema_update(self.key_encoder, self.encoder, self.momentum)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, momentum={self.momentum}"


class ATCAuxiliaryLoss(nn.Module):
    """ATC's auxiliary loss: observations at t against the momentum target's codes of t + k.

    The anchor's code is c = head(encoder(o_t)), predicted forward by a residual MLP,
    p = c + predictor(c); the positive's code comes from the momentum copies of the encoder and the
    head, c' = target_head(target_encoder(o_{t+k})); the loss is :func:`bilinear_info_nce` (p, c', W).

    Args:
        encoder: the agent's observation encoder, frames -> (N, feature_dim); trained by this loss.
        feature_dim: the size of the encoder's output.
        latent_dim: the size of the contrast head's code (ATC: 128).
        hidden_dim: the hidden width of the residual predictor MLP (ATC: 512).
        momentum: EMA momentum of the target encoder and head in [0, 1] (ATC: 0.99, i.e. tau 0.01).

    Example:
        >>> atc = ATCAuxiliaryLoss(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16)), feature_dim=16,
        ...                        latent_dim=8, hidden_dim=32)
        >>> atc(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)).shape
        torch.Size([])
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, latent_dim: int = 128, hidden_dim: int = 512,
                 momentum: float = 0.99) -> None:
        super().__init__()
        check_count("feature_dim", feature_dim, 1, "it is the size of the encoder's output.")
        check_count("latent_dim", latent_dim, 1, "ATC uses 128.")
        check_count("hidden_dim", hidden_dim, 1, "ATC uses 512.")
        self.feature_dim, self.latent_dim = int(feature_dim), int(latent_dim)
        self.momentum = _check_momentum("momentum", momentum)
        self.encoder = encoder
        self.head = nn.Linear(self.feature_dim, self.latent_dim)
        self.predictor = nn.Sequential(nn.Linear(self.latent_dim, hidden_dim), nn.ReLU(),
                                       nn.Linear(hidden_dim, self.latent_dim))
        self.target_encoder = momentum_copy(encoder)
        self.target_head = momentum_copy(self.head)
        self.W = nn.Parameter(torch.empty(self.latent_dim, self.latent_dim))
        # As a bias-free nn.Linear would be: a small W, so the first logits stay near 0.
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))

    def forward(self, obs_t: Tensor, obs_later: Tensor, *, validate: bool = True) -> Tensor:
        """The loss of the observations ``obs_t`` against ``obs_later``, k steps later in the same episodes.

        Args:
            obs_t, obs_later: (N, ...) augmented observations, row i of ``obs_later`` from the
                same episode as row i of ``obs_t``, k steps later (see
                ``contrastkit.data.rollouts`` for pairs that never cross an episode's end).
            validate: check the codes are finite (one host sync each).
        """
        code = self.head(_features("encoder", self.encoder, obs_t, self.feature_dim))
        prediction = code + self.predictor(code)
        with torch.no_grad():
            target = self.target_head(_features("target encoder", self.target_encoder, obs_later, self.feature_dim))
        return bilinear_info_nce(prediction, target, self.W, validate=validate)

    def update_target(self) -> None:
        """Move the target encoder and head towards the online ones (EMA); call after each step."""
        ema_update(self.target_encoder, self.encoder, self.momentum)
        ema_update(self.target_head, self.head, self.momentum)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, latent_dim={self.latent_dim}, momentum={self.momentum}"
