import json
import math

import pytest
import torch
from torch import nn

from contrastkit import runs
from contrastkit.config import Config, resolve
from contrastkit.errors import ConfigError
from contrastkit.augment import preset
from contrastkit.data import DeviceLoader, HostLoader, load_dataset
from contrastkit.data.device_loader import epoch_generator
from contrastkit.methods import Method
from contrastkit.train import LARS, Trainer, TrainingDiverged, cosine_with_warmup, load_checkpoint, save_atomic


def digits_config(tmp_path, name="run", **values):
    base = dict(dataset="digits", epochs=3, batch_size=64, log_every=4, evaluate=False, plot=False,
                progress=False, out=str(tmp_path / name))
    return Config(**{**base, **values})


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_simclr_run_has_finite_falling_loss(tmp_path):
    run_dir = runs.train(digits_config(tmp_path, epochs=4))
    losses = [record["loss"] for record in read_metrics(run_dir)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] - 0.1
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert any((run_dir / "tensorboard").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 4 and summary["train_seconds"] > 0


# Momentum encoders, the MoCo queue, SwAV's frozen prototypes and DINO's centre must all resume exactly.
RESUME_CASES = {"simclr": {}, "moco_v2": {"method_options": {"queue_size": 256}},
                "swav": {"hidden_dim": 64, "method_options": {"num_prototypes": 16}},
                "dino": {"hidden_dim": 64, "method_options": {"out_dim": 64, "bottleneck_dim": 16}}}


@pytest.mark.parametrize("method", sorted(RESUME_CASES))
def test_resume_after_an_interruption_matches_the_uninterrupted_run(tmp_path, method):
    values = dict(method=method, **RESUME_CASES[method])
    straight = runs.train(digits_config(tmp_path, "straight", **values))

    def interrupt_after_first_epoch(state):
        if state.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.train(digits_config(tmp_path, "resumed", **values), callbacks=[interrupt_after_first_epoch])
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["trainer"]["epoch"] == 1
    resumed = runs.train(Config(out=str(tmp_path / "resumed"), progress=False, log_every=4, evaluate=False,
                                plot=False), resume=True)

    expected = load_checkpoint(straight / "checkpoints" / "last.pt")["method"]
    actual = load_checkpoint(resumed / "checkpoints" / "last.pt")["method"]
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    assert [r["loss"] for r in read_metrics(resumed)] == [r["loss"] for r in read_metrics(straight)]


def test_starting_over_an_existing_run_or_resuming_nothing_is_refused(tmp_path):
    run_dir = runs.train(digits_config(tmp_path, epochs=1))
    with pytest.raises(runs.ContrastkitError, match="already holds a run"):
        runs.train(digits_config(tmp_path, epochs=1))
    with pytest.raises(runs.ContrastkitError, match="nothing to resume"):
        runs.train(Config(out=str(tmp_path / "elsewhere")), resume=True)
    assert run_dir.exists()


class NaNMethod(Method):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def training_step(self, views, labels=None, validate=True):
        return {"loss": self.weight.sum() * float("nan")}


def test_a_nan_loss_stops_training_with_a_clear_error():
    method = NaNMethod()
    loader = DeviceLoader(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), 4)
    trainer = Trainer(method, lambda images, generator=None: [images.float()], loader,
                      torch.optim.SGD(method.parameters(), lr=0.1), epochs=1, log_every=1, progress=False)
    with pytest.raises(TrainingDiverged, match="the loss became nan by step 1 .*Lower the learning rate"):
        trainer.fit()


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"value": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_atomic({"value": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["value"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_checkpoint_that_does_not_fit_raises_the_os_error_with_its_path(tmp_path):
    # torch.save turns a failed write into RuntimeError("... unexpected pos ..."); a full disk
    # must read as one. A file-size limit fails writes past it as a full disk does (EFBIG).
    import errno
    import resource
    import signal

    path = tmp_path / "last.pt"
    save_atomic({"value": torch.ones(3)}, path)
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, limits[1]))
    try:
        with pytest.raises(OSError) as raised:
            save_atomic({"value": torch.ones(1 << 16)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(path)
    assert torch.equal(torch.load(path)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_cosine_schedule_with_warmup():
    factors = [cosine_with_warmup(step, 100, 10) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.5) and factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_constant_schedule_holds_the_peak_after_the_warmup(tmp_path):
    run_dir = runs.train(digits_config(tmp_path, epochs=2, warmup_epochs=1.0, lr_schedule="constant", lr=0.05,
                                       log_every=1))
    rates = [record["lr"] for record in read_metrics(run_dir) if "lr" in record]
    steps_per_epoch = len(rates) // 2
    assert rates[0] == pytest.approx(0.05 / steps_per_epoch)
    assert rates[steps_per_epoch:] == pytest.approx([0.05] * steps_per_epoch)
    with pytest.raises(ConfigError, match="lr_schedule must be one of cosine, constant"):
        resolve(digits_config(tmp_path, lr_schedule="step"))


def test_lars_step_matches_its_formula():
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = nn.Parameter(torch.tensor([1.0]))
    weight.grad, bias.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    LARS([weight, bias], lr=0.1, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01).step()
    update = torch.tensor([[0.3, 1.4]])
    ratio = 0.01 * 5.0 / update.norm()
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * ratio * update)
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 0.05]))  # no decay, no adaptation


def test_streaming_from_host_memory_trains_exactly_like_the_device_resident_dataset(tmp_path):
    # Both loaders draw the same batches, so on a CPU (deterministic kernels) the runs agree bit for bit.
    resident = runs.train(digits_config(tmp_path, "device", epochs=1, data_placement="device", device="cpu"))
    streamed = runs.train(digits_config(tmp_path, "host", epochs=1, data_placement="host", device="cpu"))
    expected = load_checkpoint(resident / "checkpoints" / "last.pt")["method"]
    actual = load_checkpoint(streamed / "checkpoints" / "last.pt")["method"]
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def seen_batches(loader, augment, epochs=2):
    """What the trainer feeds the method: (images, labels, augmentation parameters, views) per step."""
    seen = []
    for epoch in range(epochs):
        generator = epoch_generator(loader.seed, epoch, stream=1)
        for images, labels in loader.epoch(epoch):
            params = augment.sample_params(images, generator)
            seen.append((images.cpu(), labels.cpu(), params, [view.cpu() for view in augment.apply(images, params)]))
    return seen


ACCELERATORS = ["cuda"] if torch.cuda.is_available() else []


@pytest.mark.parametrize("device", ["cpu", *ACCELERATORS])
@pytest.mark.parametrize("loader_class", [DeviceLoader, HostLoader])
def test_the_same_seed_gives_the_same_batches_whatever_the_placement_and_device(device, loader_class):
    splits = load_dataset("digits")
    images, labels = splits.train.images[:300], splits.train.labels[:300]
    augment = preset("digits")
    expected = seen_batches(DeviceLoader(images, labels, 64, device="cpu", seed=3), augment)
    actual = seen_batches(loader_class(images, labels, 64, device=device, seed=3), augment.to(device))
    assert len(actual) == len(expected) == 8
    for (images_a, labels_a, params_a, views_a), (images_e, labels_e, params_e, views_e) in zip(actual, expected):
        assert torch.equal(images_a, images_e) and torch.equal(labels_a, labels_e)
        for ops_a, ops_e in zip(params_a[0], params_e[0]):
            assert all(torch.equal(ops_a[key], ops_e[key]) for key in ops_e)
        for view_a, view_e in zip(views_a, views_e):
            torch.testing.assert_close(view_a, view_e, atol=1e-4, rtol=0)  # other kernels, same inputs


def test_the_epoch_order_is_drawn_on_the_cpu_for_any_device():
    # The meta device stands in for an accelerator: its order must be the CPU's, not its own generator's.
    images, labels = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10)
    on_cpu = DeviceLoader(images, labels, 4, seed=1).batch_indices(0)
    elsewhere = DeviceLoader(images, labels, 4, device="meta", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(elsewhere.batch_indices(0), on_cpu))
    assert [batch.shape[0] for batch, _ in elsewhere.epoch(0)] == [4, 4]


def test_compiled_training_follows_the_eager_run(tmp_path):
    # compile=true compiles the step and the augmentation's apply (fullgraph): same batches, same
    # losses up to the float reassociation of fused kernels.
    eager = runs.train(digits_config(tmp_path, "eager", epochs=1, batch_size=256, log_every=1, device="cpu"))
    compiled = runs.train(digits_config(tmp_path, "compiled", epochs=1, batch_size=256, log_every=1, device="cpu",
                                        compile=True))
    expected, actual = ([record["loss"] for record in read_metrics(run)] for run in (eager, compiled))
    assert len(actual) == len(expected) == 5
    assert actual == pytest.approx(expected, rel=1e-3)
