"""Recommender building blocks: ID embedding tables over the user-item graph, LightGCN propagation
(He et al., SIGIR 2020) as a sparse matrix product on the device, with SimGCL's noise perturbation
(Yu et al., SIGIR 2022) between layers.

The graph is the bipartite user-item graph of the training interactions, users as nodes
0..U-1 and items as U..U+I-1, normalised symmetrically: A_hat = D^-1/2 A D^-1/2. LightGCN's
embeddings are the mean of the layers E_0 (the ID embeddings) .. E_L, E_l = A_hat E_(l-1).

Example:
    >>> users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    >>> table = InteractionEmbeddings(2, 2, dim=4, users=users, items=items)
    >>> [part.shape for part in table.propagate(layers=2)]
    [torch.Size([2, 4]), torch.Size([2, 4])]
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError


def normalized_adjacency(users: Tensor, items: Tensor, num_users: int, num_items: int) -> Tensor:
    """The symmetrically normalised adjacency D^-1/2 A D^-1/2 of the bipartite user-item graph,
    (U + I) x (U + I), as a sparse CSR float32 tensor; isolated nodes get zero rows.

    Args:
        users, items: (N,) internal ids of the training interactions (distinct pairs).
        num_users, num_items: the id ranges.
    """
    rows = torch.cat([users, items + num_users])
    columns = torch.cat([items + num_users, users])
    degree = torch.bincount(rows, minlength=num_users + num_items).to(torch.float32)
    inverse_sqrt = torch.where(degree > 0, degree.clamp(min=1).rsqrt(), 0.0)
    values = inverse_sqrt[rows] * inverse_sqrt[columns]
    size = num_users + num_items
    coo = torch.sparse_coo_tensor(torch.stack([rows, columns]), values, (size, size), check_invariants=True)
    with warnings.catch_warnings():
        # torch calls its CSR support beta; matrix products with it are what LightGCN needs.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


class _SymmetricProduct(torch.autograd.Function):
    """A @ X for a constant symmetric sparse A, whose backward is A @ grad again: torch's own
    backward transposes A at every step (a sort of its entries), five times slower on the CPU."""

    @staticmethod
    def forward(ctx: Any, adjacency: Tensor, embeddings: Tensor) -> Tensor:
        ctx.adjacency = adjacency
        return adjacency @ embeddings

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adjacency @ grad


def perturb(embeddings: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """SimGCL's noise: ``embeddings`` plus a random vector of norm ``eps`` per row, in the same
    orthant (each component signed as the embedding's).

    Args:
        embeddings: (N, D).
        eps: the noise's L2 norm per row.
        generator: the noise's random stream (on the embeddings' device), None: the global one.
    """
    noise = torch.rand(embeddings.shape, generator=generator, device=embeddings.device, dtype=embeddings.dtype)
    return embeddings + torch.sign(embeddings) * nn.functional.normalize(noise, dim=1) * eps


def propagate(adjacency: Tensor, embeddings: Tensor, layers: int, *, include_ego: bool = True,
              noise: float = 0.0, generator: torch.Generator | None = None) -> tuple[Tensor, list[Tensor]]:
    """LightGCN's propagation: the mean of the layers and the layers themselves.

    Args:
        adjacency: the normalised adjacency (:func:`normalized_adjacency`), symmetric, sparse or dense.
        embeddings: (U + I, D) layer 0.
        layers: propagation steps L >= 0.
        include_ego: average layer 0 with the others (LightGCN); SimGCL and XSimGCL average layers
            1..L only.
        noise: SimGCL's perturbation norm added after every step (:func:`perturb`); 0 for none.
        generator: the noise's random stream.

    Returns:
        The mean embedding (U + I, D) and the list [E_1, ..., E_L].
    """
    if layers < 0:
        raise ConfigError(f"layers must be >= 0, got {layers}.")
    current, outputs = embeddings, []
    sparse = adjacency.layout != torch.strided
    # In the adjacency's precision whatever autocast says: sparse products take one dtype.
    with torch.autocast(embeddings.device.type, enabled=False):
        for _ in range(layers):
            current = current.to(adjacency.dtype)
            current = _SymmetricProduct.apply(adjacency, current) if sparse else adjacency @ current
            if noise:
                current = perturb(current, noise, generator)
            outputs.append(current)
    stacked = ([embeddings] if include_ego or not layers else []) + outputs
    return torch.stack(stacked).mean(0), outputs


class InteractionEmbeddings(nn.Module):
    """ID embeddings of every user and item with the training graph beside them: the backbone of
    the recommender methods (BPR-MF scores the embeddings themselves, LightGCN / SimGCL / XSimGCL
    propagate them over ``adjacency``, the two-tower model puts towers on them).

    Args:
        num_users, num_items: the id ranges.
        dim: the embedding width.
        users, items: (N,) the training interactions: the graph, and each item's share of them
            (``item_log_frequency``, the logQ of in-batch sampling).
        user_features, item_features: optional categorical features as bags of token ids
            (:class:`contrastkit.data.interactions.FeatureTable`), kept for the methods that embed
            them (the two-tower model's feature towers); the embeddings of their tokens are those
            methods' parameters.

    Attributes:
        adjacency: the normalised graph (not saved with the weights: it follows from the data).
        item_log_frequency: (I,) log of each item's share of the training interactions.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, users: Tensor, items: Tensor,
                 user_features: Any = None, item_features: Any = None) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"the embedding width must be >= 1, got {dim}.")
        self.num_users, self.num_items, self.feature_dim = num_users, num_items, dim
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items, dim)
        # Xavier-uniform, as RecBole's LightGCN and BPR initialise theirs.
        for table in (self.user_embedding, self.item_embedding):
            nn.init.xavier_uniform_(table.weight)
        self.register_buffer("adjacency", normalized_adjacency(users, items, num_users, num_items), persistent=False)
        counts = torch.bincount(items, minlength=num_items).to(torch.float32)
        # An item without training interactions is never in a batch; its log share stays finite.
        share = counts.clamp(min=1) / max(len(items), 1)
        self.register_buffer("item_log_frequency", share.log(), persistent=False)
        self.vocabulary_sizes = {}
        for side, table in (("user", user_features), ("item", item_features)):
            self.vocabulary_sizes[side] = len(table.vocabulary) if table is not None else 0
            empty = torch.zeros(0, dtype=torch.long)
            self.register_buffer(f"{side}_feature_tokens", table.tokens if table is not None else empty,
                                 persistent=False)
            self.register_buffer(f"{side}_feature_offsets", table.offsets if table is not None else empty,
                                 persistent=False)

    def ego(self) -> Tensor:
        """Layer 0: the (U + I, D) users' then items' ID embeddings."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def propagate(self, layers: int, *, include_ego: bool = True, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The users' and items' embeddings after ``layers`` LightGCN steps (:func:`propagate`)."""
        mean, _ = propagate(self.adjacency, self.ego(), layers, include_ego=include_ego, noise=noise,
                            generator=generator)
        return mean.split([self.num_users, self.num_items])

    def split(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """(U + I, D) node rows as the users' and the items' rows."""
        return nodes.split([self.num_users, self.num_items])

    def forward(self, pairs: Tensor) -> Tensor:
        """The ID embeddings of (B, 2) (user, item) rows, concatenated: (B, 2 D)."""
        return torch.cat([self.user_embedding(pairs[:, 0]), self.item_embedding(pairs[:, 1])], dim=1)


def uniform_log_q(num_negatives: int, num_items: int) -> float:
    """The log sampling probability of an item among ``num_negatives`` drawn uniformly from
    ``num_items``, its expected count: log(K / I)."""
    return math.log(num_negatives / num_items)
