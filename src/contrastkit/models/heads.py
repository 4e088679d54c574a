"""Projection heads that map backbone features to the space where the loss is computed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from contrastkit.errors import ConfigError

HEADS = ("identity", "linear", "mlp2", "mlp3")
ACTIVATIONS = ("relu", "gelu")


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.GELU()


class MLPHead(nn.Module):
    """Linear-BN-ReLU blocks followed by a final linear layer.

    ``num_layers=2`` is SimCLR v1's head (as lightly builds it, with batch norm), ``num_layers=3``
    SimCLR v2's deeper head. ``last_batch_norm`` adds an affine-free BatchNorm1d after the final
    linear layer (whose bias it would cancel, so that layer then has none), as in SimSiam's
    projector and MoCo v3's heads.

    Args:
        in_dim: input feature dimension.
        hidden_dim: width of the hidden layers.
        out_dim: output dimension.
        num_layers: number of linear layers, >= 1.
        batch_norm: BatchNorm1d after every hidden linear layer (which then has no bias).
        last_batch_norm: affine-free BatchNorm1d after the final linear layer.
        activation: "relu" or "gelu" between the hidden layers.

    Example:
        >>> head = MLPHead(512, 512, 128, num_layers=2)
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 batch_norm: bool = True, last_batch_norm: bool = False, activation: str = "relu") -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"an MLP head needs at least one layer, got num_layers={num_layers}.")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(_activation(activation))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021): an MLP with GELU to a bottleneck, L2
    normalisation, then a weight-normalised bias-free linear layer to ``out_dim`` logits.

    With ``normalize_last_layer`` the weight-norm gain is fixed to 1, so every output unit's weight
    vector has unit norm and the logits are cosine similarities. The last layer is exposed as
    ``last_layer`` so a method can freeze it during the first iterations.

    Args:
        in_dim: backbone feature dimension.
        out_dim: number of output logits (prototypes), 65536 in the paper.
        hidden_dim: width of the hidden layers.
        bottleneck_dim: dimension that is L2-normalised before the last layer.
        num_layers: linear layers of the MLP before the bottleneck, >= 1.
        normalize_last_layer: fix the last layer's weight-norm gain to 1 (not trained).
        batch_norm: batch norm in the MLP's hidden layers (DINO's option for ResNet backbones).

    Example:
        >>> head = DINOHead(384, out_dim=1024, hidden_dim=512, bottleneck_dim=64)
        >>> head(torch.randn(4, 384)).shape
        torch.Size([4, 1024])
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, normalize_last_layer: bool = True, batch_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"a DINO head needs at least one layer, got num_layers={num_layers}.")
        self.mlp = MLPHead(in_dim, hidden_dim, bottleneck_dim, num_layers=num_layers, batch_norm=batch_norm,
                           activation="gelu")
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                # ViT-style initialisation, as DINO's heads use.
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        if normalize_last_layer:
            gain = self.last_layer.parametrizations.weight.original0
            with torch.no_grad():
                gain.fill_(1.0)
            gain.requires_grad_(False)
        self.normalize_last_layer = bool(normalize_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class Prototypes(nn.Module):
    """SwAV's prototype vectors (Caron et al., 2020): a bias-free linear layer of ``num_prototypes`` rows.

    ``forward`` L2-normalises its input and returns its scores against the prototypes; call
    :meth:`normalize_` before every training step (as SwAV does) so the scores are cosine
    similarities.

    Args:
        dim: embedding dimension.
        num_prototypes: number of prototypes K (SwAV: 3000 on ImageNet).

    Example:
        >>> protos = Prototypes(128, 300)
        >>> protos.normalize_()
        >>> protos(torch.randn(4, 128)).shape
        torch.Size([4, 300])
    """

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ConfigError(f"Prototypes needs dim >= 1 and num_prototypes >= 1, got {dim} and {num_prototypes}.")
        self.prototypes = nn.Linear(dim, num_prototypes, bias=False)

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalise every prototype (row of ``prototypes.weight``) in place, outside autograd."""
        weight = self.prototypes.weight
        weight.copy_(F.normalize(weight, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.prototypes(F.normalize(x, dim=-1))


def create_head(kind: str, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128, *,
                batch_norm: bool = True) -> nn.Module:
    """Build a projection head: ``identity``, ``linear``, ``mlp2`` or ``mlp3``.

    Args:
        kind: one of :data:`HEADS`.
        in_dim: the backbone's feature width.
        hidden_dim: the MLPs' hidden width; defaults to ``in_dim``.
        out_dim: the output width.
        batch_norm: batch norm after the MLPs' hidden layers (MoCo v2's reference head has none).
    """
    hidden_dim = hidden_dim or in_dim
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind in ("mlp2", "mlp3"):
        return MLPHead(in_dim, hidden_dim, out_dim, num_layers=int(kind[-1]), batch_norm=batch_norm)
    raise ConfigError(f"unknown projection head {kind!r}; choose one of {', '.join(HEADS)}.")
