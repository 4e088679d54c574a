"""Projection heads that map backbone features to the space where the loss is computed."""

from __future__ import annotations

from torch import Tensor, nn

from contrastkit.errors import ConfigError

HEADS = ("identity", "linear", "mlp2", "mlp3")


class MLPHead(nn.Module):
    """Linear-BN-ReLU blocks followed by a final linear layer.

    ``num_layers=2`` is SimCLR v1's head (as lightly builds it, with batch norm), ``num_layers=3``
    SimCLR v2's deeper head.

    Example:
        >>> head = MLPHead(512, 512, 128, num_layers=2)
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"an MLP head needs at least one layer, got num_layers={num_layers}.")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def create_head(kind: str, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> nn.Module:
    """Build a projection head: ``identity``, ``linear``, ``mlp2`` or ``mlp3``.

    ``hidden_dim`` defaults to ``in_dim``.
    """
    hidden_dim = hidden_dim or in_dim
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind in ("mlp2", "mlp3"):
        return MLPHead(in_dim, hidden_dim, out_dim, num_layers=int(kind[-1]))
    raise ConfigError(f"unknown projection head {kind!r}; choose one of {', '.join(HEADS)}.")
