"""Recommenders trained on user-item interactions (the ``interactions`` modality): BPR matrix
factorisation, LightGCN, SimGCL, XSimGCL and a two-tower model.

Every one takes the :class:`~contrastkit.models.recsys.InteractionEmbeddings` backbone and the
views of :class:`~contrastkit.data.interactions.NegativeSampler`: a batch of training rows as
``[users, items, negatives]`` (negatives (B, K) drawn among each user's unseen items). What a
run is scored on is :meth:`Recommender.user_item_embeddings`: a user's score for an item is the
dot product of their rows.

* ``bpr_mf``: the ID embeddings scored directly, BPR loss (Rendle et al., 2009).
* ``lightgcn``: the mean of L propagation layers over the normalised graph (He et al., 2020),
  with BPR or an in-batch softmax (``loss=softmax``, InfoNCE over the batch's items).
* ``simgcl``: LightGCN's BPR plus InfoNCE between two noise-perturbed propagations of the batch's
  users and of its items (Yu et al., SIGIR 2022).
* ``xsimgcl``: one perturbed propagation: BPR on its output, InfoNCE between its output and one of
  its layers (Yu et al., TKDE 2023).
* ``two_tower``: a tower (an MLP head) over each side's ID embeddings, in-batch sampled softmax with
  the logQ correction and accidental hits masked, optionally extra uniform negatives (Yi et al., 2019).

Each adds ``reg_weight`` times the squared L2 norm of the batch's ID embeddings per row (RecBole's
``EmbLoss``). The InfoNCE terms are :func:`contrastkit.losses.pair_info_nce`.

Example:
    >>> from contrastkit.data.interactions import Interactions, NegativeSampler
    >>> from contrastkit.models.recsys import InteractionEmbeddings
    >>> train = Interactions(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]))
    >>> model = LightGCN(InteractionEmbeddings(3, 4, dim=8, users=train.users, items=train.items))
    >>> views = model.configure_views(NegativeSampler(train, 4))(train.pairs())
    >>> model.training_step(views)["loss"].backward()
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.losses.pairs import pair_info_nce
from contrastkit.losses.sampled_softmax import bpr_loss, sampled_softmax_loss
from contrastkit.methods.base import Method, Progress
from contrastkit.methods.registry import register_method
from contrastkit.models.heads import create_head
from contrastkit.models.recsys import InteractionEmbeddings, propagate, uniform_log_q

# Adam at lr 1e-3 on batches of 2048 rows, no weight decay (the L2 term is the methods' own): the
# setting of RecBole's and SELFRec's recommenders.
_RECIPE = dict(optimizer="adamw", lr=1e-3, weight_decay=0.0, batch_size=2048, lr_schedule="constant",
               warmup_epochs=0.0, head="identity")


class Recommender(Method):
    """The shared part of the recommenders: the backbone, the views they draw, the L2 term and
    the embeddings a run is scored on.

    Args:
        backbone: the ID embeddings and the training graph.
        reg_weight: weight of the squared L2 norm of the batch's ID embeddings (per row).
        seed: seed of the methods' own noise (SimGCL's perturbations), drawn per step from
            (seed, step) so that a resumed run draws what the uninterrupted one did.
    """

    modalities = ("interactions",)
    negatives: int = 1

    def __init__(self, backbone: InteractionEmbeddings, reg_weight: float = 1e-5, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(backbone, InteractionEmbeddings):
            raise ConfigError(f"{type(self).__name__} trains on user-item interactions with the id_embeddings "
                              f"backbone, got {type(backbone).__name__}; use backbone=id_embeddings.")
        if reg_weight < 0:
            raise ConfigError(f"reg_weight must be >= 0, got {reg_weight}.")
        self.backbone = backbone
        self.reg_weight = reg_weight
        self.seed = seed
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "Recommender":
        return cls(backbone, seed=config.seed, **cls.options(config.method_options))

    def configure_views(self, views: Any) -> Any:
        """The sampler drawing the negatives this method trains on."""
        return views.with_negatives(self.negatives)

    def embedding_module(self) -> nn.Module | None:
        # The health metrics read one module's (N, D) outputs per view; a graph model's step
        # propagates the whole graph, so there is no such module to watch.
        return None

    def on_step_start(self, progress: Progress) -> None:
        device = self.backbone.user_embedding.weight.device
        self._generator = torch.Generator(device).manual_seed(self.seed * 1_000_003 + progress.step)

    def forward(self, pairs: Tensor) -> Tensor:
        """The scores of (B, 2) (user, item) rows."""
        users, items = self.user_item_embeddings()
        return (users[pairs[:, 0]] * items[pairs[:, 1]]).sum(1)

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        """(U, D) user and (I, D) item embeddings whose dot products are the scores."""
        raise NotImplementedError

    def _views(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        expected = 3 if self.negatives else 2
        if len(views) != expected:
            raise ConfigError(f"{type(self).__name__} trains on [users, items{', negatives' if self.negatives else ''}]"
                              f" views of interaction rows, got {len(views)} views; build them with NegativeSampler.")
        return views[0], views[1], views[2] if self.negatives else None

    def _l2(self, users: Tensor, *items: Tensor) -> Tensor:
        """reg_weight x the squared norms of the batch's ID embeddings, per row."""
        norms = self.backbone.user_embedding(users).pow(2).sum()
        norms = norms + sum(self.backbone.item_embedding(part).pow(2).sum() for part in items)
        return self.reg_weight * norms / users.shape[0]

    def _bpr(self, user_rows: Tensor, item_rows: Tensor, users: Tensor, items: Tensor, negatives: Tensor) -> Tensor:
        """BPR of the batch on the given (U, D) / (I, D) embeddings."""
        anchor = user_rows[users]
        positive = (anchor * item_rows[items]).sum(1)
        negative = (anchor[:, None, :] * item_rows[negatives]).sum(2)
        return bpr_loss(positive, negative)

    def generator(self) -> torch.Generator | None:
        """This step's random stream (set by :meth:`on_step_start`; None outside the trainer)."""
        return self._generator


@register_method("bpr_mf")
class BPRMF(Recommender):
    """Matrix factorisation with the BPR loss: a user's score for an item is the dot product of
    their ID embeddings.

    Args:
        backbone: the ID embeddings.
        reg_weight: weight of the L2 term.
    """

    default_options = {"reg_weight": 1e-5}
    recipes = {"interactions": dict(_RECIPE, epochs=100)}

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.backbone.user_embedding.weight, self.backbone.item_embedding.weight

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        users, items, negatives = self._views(views)
        user_rows, item_rows = self.user_item_embeddings()
        rank = self._bpr(user_rows, item_rows, users, items, negatives)
        return {"loss": rank + self._l2(users, items, negatives), "bpr": rank.detach()}


@register_method("lightgcn")
class LightGCN(Recommender):
    """LightGCN: the mean of ``layers`` propagation steps of the ID embeddings over the graph.

    Args:
        backbone: the ID embeddings and the graph.
        layers: propagation steps (RecBole's default 2).
        loss: ``bpr`` (one negative per row) or ``softmax`` (InfoNCE of each user's item among the
            batch's items and the sampled negatives, on cosines at ``temperature``).
        temperature: the softmax loss's temperature.
        reg_weight: weight of the L2 term.
    """

    default_options = {"layers": 2, "loss": "bpr", "reg_weight": 1e-5}
    recipes = {"interactions": dict(_RECIPE, epochs=100, temperature=0.2)}
    LOSSES = ("bpr", "softmax")

    def __init__(self, backbone: InteractionEmbeddings, layers: int = 2, loss: str = "bpr", temperature: float = 0.2,
                 reg_weight: float = 1e-5, seed: int = 0) -> None:
        super().__init__(backbone, reg_weight=reg_weight, seed=seed)
        if loss not in self.LOSSES:
            raise ConfigError(f"lightgcn's loss must be one of {', '.join(self.LOSSES)}, got {loss!r}.")
        if layers < 0:
            raise ConfigError(f"layers must be >= 0, got {layers}.")
        self.layers, self.loss, self.temperature = layers, loss, temperature

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "LightGCN":
        return cls(backbone, temperature=config.temperature or 0.2, seed=config.seed,
                   **cls.options(config.method_options))

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.backbone.propagate(self.layers)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        users, items, negatives = self._views(views)
        user_rows, item_rows = self.user_item_embeddings()
        if self.loss == "bpr":
            rank = self._bpr(user_rows, item_rows, users, items, negatives)
        else:
            flat = negatives.reshape(-1)
            rank = sampled_softmax_loss(user_rows[users], item_rows[items], candidate_ids=items,
                                        negatives=item_rows[flat], negative_ids=flat, temperature=self.temperature,
                                        validate=validate)
        return {"loss": rank + self._l2(users, items, negatives), self.loss: rank.detach()}


def graph_contrastive_loss(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor], users: Tensor, items: Tensor,
                           temperature: float, validate: bool = True) -> Tensor:
    """SimGCL's contrastive term: InfoNCE between two views of the batch's distinct users, plus the
    same for its distinct items, each row's negatives being the other rows of the second view.

    Args:
        first, second: (user rows, item rows) of the two views, (U, D) and (I, D).
        users, items: the batch's user and item ids (repeats are counted once).
        temperature: InfoNCE's temperature on cosine similarities.
        validate: check that the embeddings are finite.
    """
    users, items = torch.unique(users), torch.unique(items)
    return (pair_info_nce(first[0][users], second[0][users], temperature=temperature, validate=validate)
            + pair_info_nce(first[1][items], second[1][items], temperature=temperature, validate=validate))


@register_method("simgcl")
class SimGCL(LightGCN):
    """SimGCL: LightGCN's BPR plus ``cl_weight`` times InfoNCE between two propagations perturbed
    by noise of norm ``eps`` after every layer; layer 0 is left out of the mean.

    Args:
        backbone: the ID embeddings and the graph.
        layers: propagation steps.
        eps: the noise's norm per node and layer.
        cl_weight: weight of the contrastive term.
        temperature: its temperature.
        reg_weight: weight of the L2 term.
    """

    # cl_weight: the paper's 0.1 to 0.5 (sparse Yelp, Amazon, iFashion) kept BPR at log 2 for all 100
    # epochs on the dense ML-100K (test Recall@20 0.109): the cosine's gradient, 1 / |e| for the small
    # propagated embeddings, swamps BPR's under Adam. 0.005 leaves BPR a few epochs to take over
    # (valid Recall@20 0.295 after 30 epochs, 0.291 at 0.002).
    default_options = {"layers": 2, "eps": 0.1, "cl_weight": 0.005, "reg_weight": 1e-4}
    recipes = {"interactions": dict(_RECIPE, epochs=100, temperature=0.2)}

    def __init__(self, backbone: InteractionEmbeddings, layers: int = 2, eps: float = 0.1, cl_weight: float = 0.005,
                 temperature: float = 0.2, reg_weight: float = 1e-4, seed: int = 0) -> None:
        super().__init__(backbone, layers=layers, temperature=temperature, reg_weight=reg_weight, seed=seed)
        if eps < 0 or cl_weight < 0:
            raise ConfigError(f"eps and cl_weight must be >= 0, got {eps} and {cl_weight}.")
        self.eps, self.cl_weight = eps, cl_weight

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.backbone.propagate(self.layers, include_ego=False)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        users, items, negatives = self._views(views)
        user_rows, item_rows = self.user_item_embeddings()
        rank = self._bpr(user_rows, item_rows, users, items, negatives)
        first, second = (self.backbone.propagate(self.layers, include_ego=False, noise=self.eps,
                                                 generator=self.generator()) for _ in range(2))
        contrast = graph_contrastive_loss(first, second, users, items, self.temperature, validate)
        loss = rank + self.cl_weight * contrast + self._l2(users, items, negatives)
        return {"loss": loss, "bpr": rank.detach(), "contrastive": contrast.detach()}


@register_method("xsimgcl")
class XSimGCL(LightGCN):
    """XSimGCL: one propagation perturbed by noise of norm ``eps``; BPR on its mean and
    ``cl_weight`` times InfoNCE between its mean and its layer ``cl_layer``.

    Args:
        backbone: the ID embeddings and the graph.
        layers: propagation steps.
        eps: the noise's norm per node and layer.
        cl_weight: weight of the contrastive term.
        cl_layer: the layer (1..layers) contrasted with the mean.
        temperature: the contrastive term's temperature.
        reg_weight: weight of the L2 term.
    """

    default_options = {"layers": 2, "eps": 0.2, "cl_weight": 0.1, "cl_layer": 1, "reg_weight": 1e-4}
    recipes = {"interactions": dict(_RECIPE, epochs=100, temperature=0.2)}

    def __init__(self, backbone: InteractionEmbeddings, layers: int = 2, eps: float = 0.2, cl_weight: float = 0.1,
                 cl_layer: int = 1, temperature: float = 0.2, reg_weight: float = 1e-4, seed: int = 0) -> None:
        super().__init__(backbone, layers=layers, temperature=temperature, reg_weight=reg_weight, seed=seed)
        if not 1 <= cl_layer <= layers:
            raise ConfigError(f"cl_layer must lie in 1..layers ({layers}), got {cl_layer}.")
        if eps < 0 or cl_weight < 0:
            raise ConfigError(f"eps and cl_weight must be >= 0, got {eps} and {cl_weight}.")
        self.eps, self.cl_weight, self.cl_layer = eps, cl_weight, cl_layer

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.backbone.propagate(self.layers, include_ego=False)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        users, items, negatives = self._views(views)
        mean, layers = propagate(self.backbone.adjacency, self.backbone.ego(), self.layers, include_ego=False,
                                 noise=self.eps, generator=self.generator())
        final, layer = self.backbone.split(mean), self.backbone.split(layers[self.cl_layer - 1])
        rank = self._bpr(*final, users, items, negatives)
        contrast = graph_contrastive_loss(final, layer, users, items, self.temperature, validate)
        loss = rank + self.cl_weight * contrast + self._l2(users, items, negatives)
        return {"loss": loss, "bpr": rank.detach(), "contrastive": contrast.detach()}


@register_method("two_tower")
class TwoTower(Recommender):
    """A two-tower retrieval model: a tower (the config's ``head``) over each side's ID embeddings,
    trained with the in-batch sampled softmax, logQ-corrected, accidental hits masked
    (:func:`contrastkit.losses.sampled_softmax.sampled_softmax_loss`).

    Args:
        backbone: the ID embeddings (and each item's share of the training interactions).
        user_tower, item_tower: the towers (e.g. :func:`contrastkit.models.create_head`).
        temperature: the softmax temperature on cosine similarities.
        negatives: extra items drawn uniformly per row (mixed negative sampling); 0 for in-batch only.
        log_q: subtract the log of each candidate's sampling probability from its logits.
        features: a side with categorical features (the backbone's feature tables) feeds its tower
            the mean of their token embeddings beside its ID embedding.
        reg_weight: weight of the L2 term.
    """

    default_options = {"negatives": 0, "log_q": True, "features": True, "reg_weight": 0.0}
    # Batches of 512: the B x B logits of 2048 rows made a step 16 times dearer.
    recipes = {"interactions": dict(_RECIPE, epochs=100, batch_size=512, temperature=0.1, head="mlp2",
                                    hidden_dim=128, projection_dim=64)}

    def __init__(self, backbone: InteractionEmbeddings, user_tower: nn.Module, item_tower: nn.Module,
                 temperature: float = 0.1, negatives: int = 0, log_q: bool = True, features: bool = True,
                 reg_weight: float = 0.0, seed: int = 0) -> None:
        super().__init__(backbone, reg_weight=reg_weight, seed=seed)
        if negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {negatives}.")
        self.user_tower, self.item_tower = user_tower, item_tower
        self.temperature, self.negatives, self.log_q = temperature, negatives, log_q
        self.feature_bags = nn.ModuleDict()
        for side in feature_sides(backbone, features):
            bag = nn.EmbeddingBag(backbone.vocabulary_sizes[side], backbone.feature_dim, mode="mean",
                                  include_last_offset=True)
            nn.init.xavier_uniform_(bag.weight)
            self.feature_bags[side] = bag

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> "TwoTower":
        options = cls.options(config.method_options)
        sides = feature_sides(backbone, options["features"])

        def tower(side: str) -> nn.Module:
            width = backbone.feature_dim * (2 if side in sides else 1)
            # Batch norm would make a user's embedding depend on the batch it is scored in.
            return create_head(config.head or "mlp2", width, config.hidden_dim or width,
                               config.projection_dim or backbone.feature_dim, batch_norm=False)

        return cls(backbone, tower("user"), tower("item"), temperature=config.temperature or 0.1, seed=config.seed,
                   **options)

    def _inputs(self, side: str, ids: Tensor | None = None) -> Tensor:
        """A side's tower inputs: ID embeddings of ``ids`` (None: all), with their features' mean
        token embedding where the side has features."""
        table = getattr(self.backbone, f"{side}_embedding")
        rows = table.weight if ids is None else table(ids)
        if side not in self.feature_bags:
            return rows
        bags = self.feature_bags[side](getattr(self.backbone, f"{side}_feature_tokens"),
                                       getattr(self.backbone, f"{side}_feature_offsets"))
        return torch.cat([rows, bags if ids is None else bags[ids]], dim=1)

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        users = self.user_tower(self._inputs("user"))
        items = self.item_tower(self._inputs("item"))
        return nn.functional.normalize(users, dim=1), nn.functional.normalize(items, dim=1)

    def training_step(self, views: Sequence[Any], labels: Tensor | None = None, *,
                      validate: bool = True) -> dict[str, Tensor]:
        users, items, negatives = self._views(views)
        queries = self.user_tower(self._inputs("user", users))
        candidates = self.item_tower(self._inputs("item", items))
        # The expected count of an item among the batch's B candidates: B times its share.
        log_q = self.backbone.item_log_frequency[items] + math.log(len(items)) if self.log_q else None
        extra = extra_ids = extra_log_q = None
        if negatives is not None:
            extra_ids = negatives.reshape(-1)
            extra = self.item_tower(self._inputs("item", extra_ids))
            if self.log_q:
                extra_log_q = torch.full_like(extra_ids, uniform_log_q(len(extra_ids), self.backbone.num_items),
                                              dtype=queries.dtype)
        rank = sampled_softmax_loss(queries, candidates, candidate_ids=items, log_q=log_q, negatives=extra,
                                    negative_ids=extra_ids, negative_log_q=extra_log_q,
                                    temperature=self.temperature, validate=validate)
        l2 = self._l2(users, items) if self.reg_weight else rank.new_zeros(())
        return {"loss": rank + l2, "softmax": rank.detach()}


def feature_sides(backbone: InteractionEmbeddings, features: bool) -> tuple[str, ...]:
    """The sides ("user", "item") whose features a model with ``features`` on embeds."""
    return tuple(side for side, size in backbone.vocabulary_sizes.items() if features and size)
