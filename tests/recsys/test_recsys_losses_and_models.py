"""The recommenders' pieces against references: the logQ-corrected sampled softmax against its
formula, LightGCN's sparse propagation against dense matrices, the graph contrastive loss against
float64 by hand, and each method's step."""

import math

import pytest
import torch

from contrastkit.data.interactions import Interactions, NegativeSampler
from contrastkit.errors import ConfigError
from contrastkit.losses.sampled_softmax import bpr_loss, sampled_softmax_loss
from contrastkit.methods.recsys import (BPRMF, LightGCN, SimGCL, TwoTower, XSimGCL, graph_contrastive_loss)
from contrastkit.models.recsys import InteractionEmbeddings, normalized_adjacency, perturb, propagate


def _cosines(a, b):
    return torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T


def test_log_q_correction_and_accidental_hits_follow_the_formula():
    generator = torch.Generator().manual_seed(0)
    users, items = torch.randn(6, 8, generator=generator, dtype=torch.float64), torch.randn(6, 8, generator=generator,
                                                                                           dtype=torch.float64)
    ids = torch.tensor([3, 1, 3, 2, 5, 4])  # rows 0 and 2 hold the same item
    log_q = torch.log(torch.tensor([0.3, 0.1, 0.3, 0.05, 0.2, 0.05], dtype=torch.float64))
    negatives = torch.randn(2, 8, generator=generator, dtype=torch.float64)
    negative_ids, t = torch.tensor([1, 7]), 0.1
    got = sampled_softmax_loss(users, items, candidate_ids=ids, log_q=log_q, negatives=negatives,
                               negative_ids=negative_ids, negative_log_q=torch.full((2,), math.log(2 / 10),
                                                                                   dtype=torch.float64),
                               temperature=t)
    total = 0.0
    for i in range(6):
        terms = []
        for j in range(6):
            if j != i and ids[j] == ids[i]:
                continue
            terms.append(_cosines(users[i:i + 1], items[j:j + 1]).item() / t - log_q[j].item())
        for k in range(2):
            if negative_ids[k] != ids[i]:
                terms.append(_cosines(users[i:i + 1], negatives[k:k + 1]).item() / t - math.log(0.2))
        positive = _cosines(users[i:i + 1], items[i:i + 1]).item() / t - log_q[i].item()
        total += -(positive - math.log(sum(math.exp(term) for term in terms)))
    assert got.dtype == torch.float64 and got.item() == pytest.approx(total / 6, rel=1e-12)
    # A uniform log q shifts every logit alike: no change.
    plain = sampled_softmax_loss(users, items, temperature=t)
    assert sampled_softmax_loss(users, items, log_q=torch.full((6,), -2.0, dtype=torch.float64),
                                temperature=t).item() == pytest.approx(plain.item(), rel=1e-12)
    assert bpr_loss(torch.tensor([2.0]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(
        (-math.log(1 / (1 + math.exp(-2))) + math.log(2)) / 2)


def _dense_adjacency(users, items, num_users, num_items):
    size = num_users + num_items
    adjacency = torch.zeros(size, size, dtype=torch.float64)
    for user, item in zip(users.tolist(), items.tolist()):
        adjacency[user, num_users + item] = adjacency[num_users + item, user] = 1.0
    degree = adjacency.sum(1)
    scale = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    return scale[:, None] * adjacency * scale[None, :]


def test_lightgcn_propagation_matches_a_dense_reference():
    users = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    items = torch.tensor([0, 1, 1, 0, 2, 3, 3])  # item 4 has no interaction: an isolated node
    sparse = normalized_adjacency(users, items, 4, 5)
    dense = _dense_adjacency(users, items, 4, 5)
    assert torch.allclose(sparse.to_dense().double(), dense, atol=1e-7)
    ego = torch.randn(9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    layers = [ego]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    # The sparse adjacency's weights are float32: equal to the float64 ones within float32's rounding.
    mean, outputs = propagate(sparse.double(), ego, 3)
    assert torch.allclose(mean, torch.stack(layers).mean(0), rtol=0, atol=1e-6)
    assert torch.allclose(outputs[1], layers[2], rtol=0, atol=1e-6)
    without_ego, _ = propagate(sparse.double(), ego, 3, include_ego=False)
    assert torch.allclose(without_ego, torch.stack(layers[1:]).mean(0), rtol=0, atol=1e-6)
    # With the adjacency's own float64 weights, sparse and dense products agree to float64's rounding.
    exact, _ = propagate(sparse.double(), ego, 3)
    own = sparse.double().to_dense()
    assert torch.allclose(exact, torch.stack([ego, own @ ego, own @ own @ ego, own @ own @ own @ ego]).mean(0),
                          rtol=0, atol=1e-12)
    table = InteractionEmbeddings(4, 5, dim=6, users=users, items=items)
    user_rows, item_rows = table.propagate(2)
    reference = torch.stack([table.ego().double(), dense @ table.ego().double(),
                             dense @ dense @ table.ego().double()]).mean(0)
    assert torch.allclose(torch.cat([user_rows, item_rows]).double(), reference, atol=1e-6)


def test_simgcl_noise_has_norm_eps_in_the_embeddings_orthant():
    embeddings = torch.randn(10, 4)
    noisy = perturb(embeddings, 0.1, torch.Generator().manual_seed(0))
    noise = noisy - embeddings
    assert torch.allclose(noise.norm(dim=1), torch.full((10,), 0.1))
    assert (noise * embeddings >= 0).all()


def test_the_graph_contrastive_loss_matches_float64_by_hand():
    generator = torch.Generator().manual_seed(0)
    first = (torch.randn(5, 4, generator=generator), torch.randn(6, 4, generator=generator))
    second = (torch.randn(5, 4, generator=generator), torch.randn(6, 4, generator=generator))
    users, items, t = torch.tensor([0, 3, 3, 1]), torch.tensor([5, 2, 5, 0]), 0.2
    got = graph_contrastive_loss(first, second, users, items, t)

    def info_nce(a, b):
        a, b = a.double(), b.double()
        logits = _cosines(a, b) / t
        return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()

    expected = (info_nce(first[0][[0, 1, 3]], second[0][[0, 1, 3]])
                + info_nce(first[1][[0, 2, 5]], second[1][[0, 2, 5]]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def _model_and_views(method_class, **options):
    train = Interactions(torch.tensor([0, 0, 1, 2, 2, 3, 3, 3]), torch.tensor([0, 1, 1, 2, 4, 0, 3, 4]))
    torch.manual_seed(0)
    backbone = InteractionEmbeddings(4, 5, dim=8, users=train.users, items=train.items)
    if method_class is TwoTower:
        model = TwoTower(backbone, torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), **options)
    else:
        model = method_class(backbone, **options)
    views = model.configure_views(NegativeSampler(train, 5))(train.pairs(), torch.Generator().manual_seed(0))
    return model, views


@pytest.mark.parametrize("method_class, options", [(BPRMF, {}), (LightGCN, {}), (LightGCN, {"loss": "softmax"}),
                                                   (SimGCL, {}), (XSimGCL, {}), (TwoTower, {}),
                                                   (TwoTower, {"negatives": 2})])
def test_every_method_steps_and_scores(method_class, options):
    model, views = _model_and_views(method_class, **options)
    losses = model.training_step(views)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and model.backbone.user_embedding.weight.grad is not None
    users, items = model.user_item_embeddings()
    assert users.shape[0] == 4 and items.shape[0] == 5
    assert torch.allclose(model(torch.tensor([[1, 2]])), (users[1] * items[2]).sum())


def test_the_two_tower_model_embeds_categorical_features_beside_ids():
    from contrastkit.data.interactions import FeatureTable

    train = Interactions(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    genres = FeatureTable(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 2, 3, 4]), ["g=a", "g=b", "g=c"])
    backbone = InteractionEmbeddings(3, 3, dim=4, users=train.users, items=train.items, item_features=genres)
    model = TwoTower(backbone, torch.nn.Linear(4, 4), torch.nn.Linear(8, 4))
    assert list(model.feature_bags) == ["item"]
    bag = model.feature_bags["item"].weight
    assert torch.allclose(model._inputs("item")[0, 4:], bag[[0, 1]].mean(0))
    losses = model.training_step(model.configure_views(NegativeSampler(train, 3))(train.pairs()))
    losses["loss"].backward()
    assert bag.grad is not None and model.user_item_embeddings()[1].shape == (3, 4)


def test_lightgcn_with_zero_layers_is_matrix_factorisation_and_bad_options_are_refused():
    lightgcn, views = _model_and_views(LightGCN, layers=0)
    mf, _ = _model_and_views(BPRMF)
    assert torch.allclose(lightgcn.training_step(views)["loss"], mf.training_step(views)["loss"])
    with pytest.raises(ConfigError, match="cl_layer must lie in 1..layers"):
        _model_and_views(XSimGCL, cl_layer=3)
    with pytest.raises(ConfigError, match="loss must be one of bpr, softmax"):
        _model_and_views(LightGCN, loss="hinge")
