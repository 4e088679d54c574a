"""In-batch sampled softmax with the logQ correction (Yi et al., RecSys 2019), the loss of two-tower
retrieval models: each query (a user) classifies its own candidate (the item it interacted with)
among the batch's candidates and optional extra negatives.

The batch's candidates are not drawn uniformly but in proportion to how often they occur, so a
popular item is a negative far more often than the full softmax would make it one. The correction
subtracts the log of each candidate's sampling probability q_j from its logit, the positive's too:

    l_ij = s(u_i, v_j) / t - log q_j
    L    = 1/B sum_i -log( exp(l_ii) / (sum_j exp(l_ij) + sum_k exp(s(u_i, n_k) / t - log q_k)) )

with s the cosine (or dot) similarity. A column j != i holding the same item as row i's positive
(an accidental hit) is masked out of row i's denominator, as is an extra negative that is row i's
positive item. TensorFlow Recommenders' ``Retrieval`` task and NVIDIA Merlin compute the same.
Without ``log_q`` and ids this is :func:`contrastkit.losses.pair_info_nce` with extra negatives.

Example:
    >>> users, items = torch.randn(8, 16), torch.randn(8, 16)
    >>> ids = torch.tensor([0, 1, 2, 2, 3, 4, 5, 6])
    >>> sampled_softmax_loss(users, items, candidate_ids=ids, log_q=torch.full((8,), -3.0)).shape
    torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_embeddings, check_finite, check_paired_embeddings, check_positive
from contrastkit.errors import ConfigError, InputError
from contrastkit.losses._precision import full_precision, loss_dtype


def _check_column(name: str, values: Tensor | None, rows: int) -> None:
    if values is not None and (values.ndim != 1 or values.shape[0] != rows):
        raise InputError(f"{name} must be a 1-D tensor of {rows} values, one per column, got {tuple(values.shape)}.")


def _similarities(a: Tensor, b: Tensor, similarity: str, temperature: float) -> Tensor:
    if similarity == "cosine":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return a @ b.T / temperature


def sampled_softmax_loss(queries: Tensor, candidates: Tensor, *, candidate_ids: Tensor | None = None,
                         log_q: Tensor | None = None, negatives: Tensor | None = None,
                         negative_ids: Tensor | None = None, negative_log_q: Tensor | None = None,
                         temperature: float = 0.05, similarity: str = "cosine", validate: bool = True) -> Tensor:
    """The corrected in-batch softmax (see the module docstring).

    Args:
        queries: (B, D) query embeddings (users); row i's positive is ``candidates[i]``.
        candidates: (B, D) embeddings of each query's positive (items), the other rows' negatives.
        candidate_ids: (B,) ids of the candidates: a column with row i's id is not its negative
            (accidental hits); None: every column is distinct.
        log_q: (B,) log sampling probability of each candidate, subtracted from its logits; None:
            no correction.
        negatives: optional (K, D) extra negatives shared by every row (e.g. uniformly drawn items).
        negative_ids: (K,) their ids, masked where they equal row i's candidate id.
        negative_log_q: (K,) their log sampling probabilities (uniform over I items drawn K at a
            time: log(K / I)); None: no correction.
        temperature: softmax temperature t > 0.
        similarity: "cosine" (rows L2-normalised first) or "dot".
        validate: check that the embeddings are finite (one host sync per tensor).

    Returns:
        The scalar mean loss, in float32 (or float64 for float64 inputs).
    """
    check_positive("temperature", temperature, "two-tower models use 0.05 to 0.2 on cosine similarities.")
    if similarity not in ("cosine", "dot"):
        raise ConfigError(f"similarity must be cosine or dot, got {similarity!r}.")
    check_paired_embeddings("sampled_softmax_loss", queries, candidates, ("queries", "candidates"),
                            min_batch=1 if negatives is not None else 2, validate=validate,
                            reason="a query needs a negative: use a larger batch, or pass negatives=.")
    batch = queries.shape[0]
    _check_column("candidate_ids", candidate_ids, batch)
    _check_column("log_q", log_q, batch)
    if negatives is not None:
        check_embeddings("negatives", negatives, "(num_negatives, dim)")
        if negatives.shape[1] != queries.shape[1]:
            raise InputError(f"negatives have dim {negatives.shape[1]} but the queries have dim {queries.shape[1]}.")
        _check_column("negative_ids", negative_ids, negatives.shape[0])
        _check_column("negative_log_q", negative_log_q, negatives.shape[0])
        if negative_ids is not None and candidate_ids is None:
            raise InputError("negative_ids are compared with the candidates' ids; pass candidate_ids too.")
        if validate:
            check_finite("negatives", negatives)
    dtype = loss_dtype(queries)
    queries, candidates = queries.to(dtype), candidates.to(dtype)
    with full_precision(queries):
        logits = _similarities(queries, candidates, similarity, temperature)
        if log_q is not None:
            logits = logits - log_q.to(dtype)[None, :]
        if candidate_ids is not None:
            same = candidate_ids[:, None] == candidate_ids[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        if negatives is not None:
            extra = _similarities(queries, negatives.to(dtype), similarity, temperature)
            if negative_log_q is not None:
                extra = extra - negative_log_q.to(dtype)[None, :]
            if negative_ids is not None:
                extra = extra.masked_fill(candidate_ids[:, None] == negative_ids[None, :], float("-inf"))
            logits = torch.cat([logits, extra], dim=1)
        targets = torch.arange(batch, device=queries.device)
        return F.cross_entropy(logits, targets)


class SampledSoftmaxLoss(nn.Module):
    """Module form of :func:`sampled_softmax_loss`.

    Example:
        >>> loss_fn = SampledSoftmaxLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.randn(8, 16), log_q=torch.full((8,), -2.0))
    """

    def __init__(self, temperature: float = 0.05, similarity: str = "cosine") -> None:
        super().__init__()
        check_positive("temperature", temperature, "two-tower models use 0.05 to 0.2 on cosine similarities.")
        self.temperature = temperature
        self.similarity = similarity

    def forward(self, queries: Tensor, candidates: Tensor, *, candidate_ids: Tensor | None = None,
                log_q: Tensor | None = None, negatives: Tensor | None = None, negative_ids: Tensor | None = None,
                negative_log_q: Tensor | None = None, validate: bool = True) -> Tensor:
        return sampled_softmax_loss(queries, candidates, candidate_ids=candidate_ids, log_q=log_q,
                                    negatives=negatives, negative_ids=negative_ids, negative_log_q=negative_log_q,
                                    temperature=self.temperature, similarity=self.similarity, validate=validate)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"


def bpr_loss(positive_scores: Tensor, negative_scores: Tensor) -> Tensor:
    """Bayesian personalised ranking (Rendle et al., 2009): -log sigmoid(s+ - s-), averaged; with
    several negatives per positive (B, K) each pair counts once.

    Args:
        positive_scores: (B,) scores of the observed (user, item) pairs.
        negative_scores: (B,) or (B, K) scores of sampled unobserved items for the same users.

    Example:
        >>> round(float(bpr_loss(torch.zeros(4), torch.zeros(4))), 4)  # log 2
        0.6931
    """
    if negative_scores.ndim == 2:
        positive_scores = positive_scores[:, None]
    dtype = loss_dtype(positive_scores)
    return -F.logsigmoid(positive_scores.to(dtype) - negative_scores.to(dtype)).mean()
