"""Batch norm across views, method by method, as each method's reference code has it.

A method whose reference runs the views through the encoder as one batch normalises over all of
them; one that runs a pass per view normalises each by its own statistics. The two train
differently (an independent check of MoCo v3 found the loss up to 6 % and the gradients 1.2x apart
from this alone), so each method follows its reference by default.
"""

import copy
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit._distributed import forward_shuffled, shuffle_order
from contrastkit.config import Config, resolve
from contrastkit.errors import ConfigError
from contrastkit.methods import METHODS, MoCoV3
from contrastkit.models import SplitBatchNorm, create_backbone, split_batch_norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
from loss_helpers import run_in_process_group  # noqa: E402

# method: whether its reference runs the views of one shape as one batch.
REFERENCE_VIEWS_SHARE_BATCH_NORM = {
    "simclr": True,  # google-research/simclr: the views are concatenated along the batch (global BN)
    "supcon": True,  # HobbitLong/SupContrast main_supcon.py: torch.cat([images[0], images[1]])
    "swav": True,  # facebookresearch/swav: the crops of one resolution in one forward pass
    "dino": True,  # facebookresearch/dino utils.MultiCropWrapper: the same, student and teacher
    "moco_v2": False,  # facebookresearch/moco builder.py: encoder_q(im_q); keys shuffled across GPUs
    "moco_v3": False,  # facebookresearch/moco-v3 builder.py: one pass per view, online and momentum
    "byol": False,  # deepmind-research byol_experiment.py: each view through the networks apart
    "simsiam": False,  # facebookresearch/simsiam builder.py: z1 = projector(encoder(x1)); z2 = ...
    "barlow_twins": False,  # facebookresearch/barlowtwins main.py: z1 = projector(backbone(y1)); z2 = ...
    "vicreg": False,  # facebookresearch/vicreg main_vicreg.py: x = projector(backbone(x)); y = ...
}
SMALL_OPTIONS = {"moco_v2": {"queue_size": 32, "batch_norm_splits": 2}, "swav": {"num_prototypes": 16},
                 "dino": {"out_dim": 64, "bottleneck_dim": 16}, "moco_v3": {"predictor_hidden_dim": 32},
                 "byol": {"predictor_hidden_dim": 32}, "simsiam": {"predictor_hidden_dim": 32}}


def build(name, batch_size=8, **options):
    torch.manual_seed(0)
    config = resolve(Config(method=name, dataset="digits", batch_size=batch_size, hidden_dim=32, projection_dim=16,
                            method_options={**SMALL_OPTIONS.get(name, {}), **options}))
    return METHODS.get(name).from_config(create_backbone("small_cnn", in_channels=1), config)


def batch_norm_rows(model, views):
    """The number of rows each batch-norm layer of ``model`` (online and momentum copies) saw in
    one training step on ``views``, in call order."""
    seen = []
    hooks = [module.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
             for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    try:
        model.training_step(views, torch.arange(views[0].shape[0]) % 4)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def views_of(batch, size, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 1, size, size, generator=generator) for _ in range(count)]


def test_every_image_method_states_its_reference():
    image_methods = {name for name in METHODS.names() if "image" in METHODS.get(name).modalities}
    assert image_methods == set(REFERENCE_VIEWS_SHARE_BATCH_NORM)


@pytest.mark.parametrize("name", sorted(REFERENCE_VIEWS_SHARE_BATCH_NORM))
def test_batch_norm_sees_the_views_as_the_reference_does(name):
    model = build(name)
    shared = REFERENCE_VIEWS_SHARE_BATCH_NORM[name]
    assert model.views_share_batch_norm is shared
    rows = batch_norm_rows(model, views_of(8, 8, 2))
    assert rows and set(rows) == {16 if shared else 8}, rows
    model.views_share_batch_norm = not shared  # the other way, asked for on the instance
    rows = batch_norm_rows(model, views_of(8, 8, 2))
    assert set(rows) == {8 if shared else 16}, rows


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_multi_crop_runs_each_resolution_as_one_batch_and_the_head_on_all(name):
    # Two global crops of 8 px and three local crops of 4 px of 8 samples: the backbone sees 16
    # rows, then 24; the head (with batch norm on a ResNet-like backbone) all 40 features at once.
    model = build(name)
    rows = batch_norm_rows(model, views_of(8, 8, 2) + views_of(8, 4, 3, seed=1))
    assert set(rows) == {16, 24, 40}, rows


def reference_moco_v3_loss(model, x1, x2, temperature):
    """MoCo v3's step as facebookresearch/moco-v3 writes it (builder.py, forward and
    contrastive_loss), on the model's own modules: one pass per view through each encoder."""
    def contrastive_loss(q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / temperature
        return F.cross_entropy(logits, torch.arange(q.shape[0])) * (2 * temperature)

    q1 = model.prediction_head(model.projection_head(model.backbone(x1)))
    q2 = model.prediction_head(model.projection_head(model.backbone(x2)))
    with torch.no_grad():
        k1 = model.key_head(model.key_backbone(x1))
        k2 = model.key_head(model.key_backbone(x2))
    return contrastive_loss(q1, k2) + contrastive_loss(q2, k1)


def test_a_moco_v3_step_equals_the_reference_code_step():
    # The loss (ctr(q1, k2) + ctr(q2, k1), each cross-entropy times 2t) and every gradient.
    torch.manual_seed(0)
    model = MoCoV3(create_backbone("small_cnn", in_channels=1), hidden_dim=32, projection_dim=16,
                   predictor_hidden_dim=32, temperature=0.2).double()
    x1, x2 = (view.double() for view in views_of(8, 8, 2))
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    loss = model.training_step([x1, x2])["loss"]
    grads = torch.autograd.grad(loss, trained)
    expected = reference_moco_v3_loss(model, x1, x2, 0.2)
    expected_grads = torch.autograd.grad(expected, trained)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    # The same step with both views in one batch is a different step: the test can tell them apart.
    model.views_share_batch_norm = True
    assert abs(model.training_step([x1, x2])["loss"].item() - expected.item()) > 1e-6


def shuffled_worker(rank, world, inputs):
    # Each row's feature holds its global index; the module records which global rows its batch
    # norm would see, and returns its input doubled.
    seen = []

    def module(batch):
        seen.append(sorted(batch[:, 0].tolist()))
        return batch * 2

    mine = inputs[rank * 6:(rank + 1) * 6]
    torch.manual_seed(rank)  # the shuffle comes from the step alone, not from each process's generator
    outputs = forward_shuffled(module, mine, torch.tensor(3))
    torch.testing.assert_close(outputs, mine * 2)  # back in this process's order
    own = set(range(rank * 6, (rank + 1) * 6))
    assert len(seen) == 1 and len(seen[0]) == 6
    assert not own.issuperset(seen[0]), "the key encoder saw only this process's rows"


def test_moco_v2_keys_are_shuffled_across_processes_and_put_back():
    inputs = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 3)
    with tempfile.TemporaryDirectory() as folder:
        run_in_process_group(Path(folder), shuffled_worker, inputs)


def test_in_one_process_the_keys_are_shuffled_and_put_back():
    seen = []

    def module(batch):
        seen.append(batch[:, 0].tolist())
        return batch * 3

    batch = torch.arange(16, dtype=torch.float32)[:, None].repeat(1, 2)
    torch.testing.assert_close(forward_shuffled(module, batch, torch.tensor(0)), batch * 3)
    assert sorted(seen[0]) == list(range(16)) and seen[0] != list(range(16))


def test_the_shuffle_is_a_permutation_drawn_from_the_step_alone():
    # The same step gives the same order (a resumed run replays it), another step another order.
    orders = [shuffle_order(512, torch.tensor(step)) for step in (1, 2, 1)]
    assert all(sorted(order.tolist()) == list(range(512)) for order in orders)
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])
    # Spread, not a near-identity: a shuffled sample lands in any of 8 groups about equally often.
    groups = torch.bincount(shuffle_order(512, torch.tensor(7))[:64] % 8, minlength=8)
    assert groups.max() <= 16, groups


def reference_split_batch_norm(x, norm, splits):
    """Each group j (rows j, j + splits, ...) through batch norm alone, in float64, and the running
    statistics each group's update would give, averaged."""
    output = torch.empty_like(x)
    means, variances = [], []
    for group in range(splits):
        mean, var = norm.running_mean.clone(), norm.running_var.clone()
        output[group::splits] = F.batch_norm(x[group::splits], mean, var, norm.weight, norm.bias, True,
                                             norm.momentum, norm.eps)
        means.append(mean)
        variances.append(var)
    return output, torch.stack(means).mean(0), torch.stack(variances).mean(0)


@pytest.mark.parametrize("shape", [(12, 5), (12, 5, 3, 4)])
def test_split_batch_norm_normalises_each_group_alone(shape):
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(5) if len(shape) == 2 else nn.BatchNorm2d(5)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.normal_()
    plain = plain.double()
    split = split_batch_norm(copy.deepcopy(plain), 3)
    assert isinstance(split, SplitBatchNorm) and split.weight.dtype == torch.float64
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    expected, mean, var = reference_split_batch_norm(x, plain, 3)
    torch.testing.assert_close(split(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(split.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(split.running_var, var, rtol=1e-12, atol=1e-12)
    split.eval()  # evaluation: batch norm's own, with the running statistics
    torch.testing.assert_close(split(x), F.batch_norm(x, mean, var, plain.weight, plain.bias, False, 0.0, plain.eps))
    assert set(split.state_dict()) == set(plain.state_dict())


def test_a_batch_the_splits_do_not_divide_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="10 rows does not split into 4 .* divisible by 4"):
        SplitBatchNorm(3, num_splits=4)(torch.randn(10, 3))
    with pytest.raises(ConfigError, match="batch of 12 per process .* divisible by 8"):
        build("moco_v2", batch_size=12, batch_norm_splits=None)


def test_moco_v2_splits_batch_norm_in_eight_on_one_process():
    model = build("moco_v2", batch_size=16, batch_norm_splits=None)
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(norm, SplitBatchNorm) and norm.num_splits == 8 for norm in norms)
