"""The mechanics each method relies on: stop-gradients, momentum updates, queues, frozen layers."""

import copy
import math

import pytest
import torch

from contrastkit.errors import ConfigError
from contrastkit.methods import (BYOL, DINO, METHODS, MoCoV2, MoCoV3, Progress, SimCLR, SimSiam, SupCon, SwAV,
                                 forward_views, list_methods)
from contrastkit.models import create_backbone, create_head


def backbone():
    torch.manual_seed(0)
    return create_backbone("small_cnn", in_channels=1)


def views(batch=8, size=8, count=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 1, size, size, generator=generator) for _ in range(count)]


def progress(step, steps_per_epoch=10, total_steps=100):
    return Progress(step=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def test_forward_views_batches_each_resolution_once():
    calls = []

    def module(x):
        calls.append(tuple(x.shape))
        return x.flatten(1).sum(1, keepdim=True)

    inputs = views(4, 8, 2) + views(4, 4, 3, seed=1)
    outputs = forward_views(module, inputs)
    assert calls == [(8, 1, 8, 8), (12, 1, 4, 4)]
    for view, output in zip(inputs, outputs):
        torch.testing.assert_close(output, view.flatten(1).sum(1, keepdim=True))


def test_progress_epoch_and_fraction():
    assert (progress(15).epoch, progress(15).fraction) == (1.5, 0.15)


@pytest.mark.parametrize("method_class", [BYOL, MoCoV3])
def test_momentum_target_gets_no_gradient_and_follows_the_ema(method_class):
    model = method_class(backbone(), hidden_dim=32, projection_dim=16, predictor_hidden_dim=32)
    targets = [module for target, _ in model.momentum_pairs() for module in [target]]
    assert all(not p.requires_grad for target in targets for p in target.parameters())
    model.training_step(views())["loss"].backward()
    assert all(p.grad is None for target in targets for p in target.parameters())
    with torch.no_grad():  # move the online network as an optimizer step would
        for _, online in model.momentum_pairs():
            for p in online.parameters():
                p.add_(torch.randn_like(p))
    before = [copy.deepcopy(target.state_dict()) for target in targets]
    model.on_step_end(progress(50))  # half-way: momentum 0.99 + 0.01 / 2
    momentum = 1.0 - 0.01 * (1 + torch.cos(torch.tensor(torch.pi * 0.5)).item()) / 2
    for (target, online), old in zip(model.momentum_pairs(), before):
        for name, p in target.named_parameters():
            expected = momentum * old[name] + (1 - momentum) * dict(online.named_parameters())[name]
            torch.testing.assert_close(p, expected)


def test_simsiam_stops_the_gradient_of_the_target_branch():
    # Only the prediction path carries gradient: zeroing the predictor's output weights leaves
    # the loss's gradient to the projector zero as well.
    model = SimSiam(backbone(), hidden_dim=32, projection_dim=16, predictor_hidden_dim=8)
    with torch.no_grad():
        model.prediction_head.layers[-1].weight.zero_()
        model.prediction_head.layers[-1].bias.fill_(1.0)
    model.training_step(views())["loss"].backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.projection_head.parameters() if p.grad is not None)


def test_moco_v2_queue_takes_the_first_views_keys_at_the_end_of_the_step():
    # One batch-norm group: the shuffled keys then equal the key encoder on the view as it is.
    model = MoCoV2(backbone(), create_head("mlp2", 128, 32, 16), queue_size=24, ema_momentum=1.0,
                   ema_momentum_final=1.0, batch_norm_splits=1)
    batch = views()
    first = model.training_step(batch)["loss"]  # empty queue: in-batch keys are the negatives
    assert torch.isfinite(first)
    assert model.queue.get()[0].shape == (0, 16)  # backward still needs the queue as it was
    with torch.no_grad():
        expected_keys = model.key_head(model.key_backbone(batch[0]))  # the first view, through on its own
    model.on_step_end(progress(0))
    keys, _ = model.queue.get()
    assert keys.shape == (8, 16)
    torch.testing.assert_close(keys, expected_keys)
    model.training_step(views(seed=1))
    model.on_step_end(progress(1))
    assert model.queue.get()[0].shape == (16, 16)


def test_moco_v2_training_step_does_not_copy_or_change_the_queue():
    model = MoCoV2(backbone(), create_head("mlp2", 128, 32, 16), queue_size=16, batch_norm_splits=2)
    model.queue.enqueue(torch.randn(16, 16))
    before = model.queue.keys.clone()
    model.training_step(views())["loss"].backward()
    assert torch.equal(model.queue.keys, before)


def test_moco_v2_refuses_a_queue_smaller_than_the_batch():
    from contrastkit.config import Config, resolve, update

    config = resolve(update(Config(), {"method": "moco_v2", "dataset": "digits", "batch_size": 128,
                                       "method_options": {"queue_size": 64}}))
    with pytest.raises(ConfigError, match="queue_size"):
        MoCoV2.from_config(backbone(), config)


def test_swav_normalises_and_freezes_its_prototypes():
    model = SwAV(backbone(), hidden_dim=32, projection_dim=16, num_prototypes=10, freeze_prototypes_epochs=1.0)
    with torch.no_grad():
        model.prototypes.prototypes.weight.mul_(3.0)  # parameter name of Prototypes' vectors
    model.on_step_start(progress(0))
    torch.testing.assert_close(model.prototypes.prototypes.weight.norm(dim=1), torch.ones(10))
    model.training_step(views())["loss"].backward()
    model.on_before_optimizer_step(progress(5))  # still in the first epoch: frozen
    assert model.prototypes.prototypes.weight.grad is None
    model.training_step(views())["loss"].backward()
    model.on_before_optimizer_step(progress(10))  # second epoch: trained
    assert model.prototypes.prototypes.weight.grad is not None


def test_dino_schedules_the_teacher_temperature_and_freezes_the_last_layer():
    model = DINO(backbone(), hidden_dim=32, out_dim=64, bottleneck_dim=16, teacher_temperature=0.07,
                 warmup_teacher_temperature=0.04, warmup_teacher_temperature_epochs=2.0, freeze_last_layer_epochs=1.0)
    model.on_step_start(progress(10))  # one of two warm-up epochs done
    assert model.current_teacher_temperature == pytest.approx(0.055)
    model.on_step_start(progress(30))
    assert model.current_teacher_temperature == pytest.approx(0.07)
    loss = model.training_step(views(count=2) + views(size=4, count=2, seed=3))["loss"]
    loss.backward()
    assert all(p.grad is None for p in model.teacher_head.parameters())
    model.on_before_optimizer_step(progress(5))
    assert all(p.grad is None for p in model.head.last_layer.parameters())
    assert any(p.grad is not None for p in model.head.parameters())


def test_supcon_needs_labels():
    model = SupCon(backbone(), create_head("mlp2", 128, 32, 16))
    with pytest.raises(ConfigError, match="needs the batch's labels"):
        model.training_step(views())
    loss = model.training_step(views(), labels=torch.tensor([0, 1, 0, 1, 2, 2, 3, 3]))["loss"]
    assert torch.isfinite(loss)


def test_two_view_methods_refuse_multi_crop_views():
    model = SimSiam(backbone(), hidden_dim=32, projection_dim=16, predictor_hidden_dim=8)
    with pytest.raises(ConfigError, match="exactly two views"):
        model.training_step(views(count=3))


def test_simclr_accepts_several_views():
    model = SimCLR(backbone(), create_head("mlp2", 128, 32, 16))
    assert torch.isfinite(model.training_step(views(count=3))["loss"])


def test_vicreg_cifar_recipe_trains_without_diverging():
    # VICReg's covariance term is quartic in the embedding's scale and dominates the gradient at
    # initialisation; with plain SGD (the recipe before LARS) this run reached inf by step 5.
    from contrastkit.augment import preset
    from contrastkit.config import Config, resolve
    from contrastkit.methods import VICReg
    from contrastkit.train import create_optimizer

    config = resolve(Config(method="vicreg", dataset="cifar10", backbone="small_cnn", cifar_stem=False,
                            batch_size=128))
    torch.manual_seed(0)
    model = VICReg.from_config(create_backbone("small_cnn", in_channels=3), config)
    optimizer = create_optimizer(config.optimizer, model.parameters(), lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=generator)
    augment = preset("simclr_cifar")
    losses = []
    for _ in range(10):
        loss = model.training_step(augment(images, generator=generator), validate=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0]


# Small sizes per method, so that every training step compiles in about a second on a CPU.
SMALL_OPTIONS = {"moco_v2": {"queue_size": 32, "batch_norm_splits": 2}, "swav": {"num_prototypes": 16},
                 "dino": {"out_dim": 64, "bottleneck_dim": 16}, "moco_v3": {"predictor_hidden_dim": 32},
                 "byol": {"predictor_hidden_dim": 32}, "simsiam": {"predictor_hidden_dim": 32}}


@pytest.mark.parametrize("name", [name for name in list_methods() if "image" in METHODS.get(name).modalities])
def test_every_training_step_compiles_as_one_graph(name):
    # fullgraph=True fails on a host sync or a data-dependent shape: what would stall the GPU
    # between steps or break CUDA-graph capture. (MoCo v2 reads its fill count until the queue is full.)
    from contrastkit.config import Config, resolve

    torch._dynamo.reset()  # one lambda for every method: start each from a clean cache, not a recompile
    config = resolve(Config(method=name, dataset="digits", batch_size=16, hidden_dim=32, projection_dim=16,
                            method_options=SMALL_OPTIONS.get(name, {})))
    model = METHODS.get(name).from_config(backbone(), config)
    if name == "moco_v2":
        model.queue.enqueue(torch.randn(32, 16))
    eager = copy.deepcopy(model)  # a step changes state (DINO's centre), so each path gets its own copy
    batch, labels = views(batch=16), torch.arange(16) % 4
    step = torch.compile(lambda v, y: model.training_step(v, y, validate=False)["loss"], fullgraph=True,
                         backend="aot_eager")
    torch.testing.assert_close(step(batch, labels), eager.training_step(batch, labels, validate=False)["loss"])
