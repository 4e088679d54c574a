"""The health metrics while training: logged at logged steps, a warning when the embeddings
collapse (within the first epoch of a collapsing run, never in a healthy one), and a clean stop
with ``stop_on_collapse``."""

import json
import warnings

import pytest
import torch
from torch import nn

from contrastkit import runs
from contrastkit.config import Config, resolve
from contrastkit.data.device_loader import DeviceLoader
from contrastkit.evaluate import health_metrics
from contrastkit.methods import Method
from contrastkit.train.health import CollapseMonitor, HealthProbe, TrainingCollapsed
from contrastkit.train.trainer import HEALTH_KEYS, Trainer


def train_digits(tmp_path, name, **values):
    config = resolve(Config(**{**dict(dataset="digits", epochs=2, out=str(tmp_path / name), evaluate=False,
                                      plot=False, progress=False, log_every=5, device="cpu"), **values}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = runs.train(config)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    collapse = [str(warning.message) for warning in caught if "embeddings look" in str(warning.message)]
    return records, collapse


def test_a_healthy_digits_run_logs_its_health_and_is_never_warned(tmp_path):
    records, collapse = train_digits(tmp_path, "simclr")
    assert collapse == []
    assert all(set(HEALTH_KEYS) <= set(record) for record in records)
    last = records[-1]
    # SimCLR's 128-d projections, spread: about 1/sqrt(128) = 0.088 per dimension, tens of directions.
    assert 0.05 < last["embedding_std"] < 0.1 and last["rankme"] > 10 and last["positive_negative_gap"] > 0


def test_a_collapsing_run_is_warned_within_its_first_epoch(tmp_path):
    # SimSiam at 100 times its learning rate: its projections fall onto a few directions (RankMe
    # about 4 of 128 by the end of the first epoch of 11 steps).
    records, collapse = train_digits(tmp_path, "simsiam", method="simsiam", lr=20.0)
    assert collapse and "simsiam" in collapse[0] and "stop-gradient" in collapse[0], collapse
    step = int(collapse[0].split("at step ")[1].split()[0])
    assert step <= records[0]["step"] + 11  # the first epoch's steps


class CollapsingMethod(Method):
    """Spread embeddings in the first epoch, then collapsed by construction: from the second, the
    head's weight is zero and every row is its bias, one point."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Flatten()
        self.projection_head = nn.Linear(4, 16)

    def on_step_start(self, progress):
        if progress.epoch >= 1:
            with torch.no_grad():
                self.projection_head.weight.zero_()

    def training_step(self, views, labels=None, validate=True):
        embeddings = self.encode_views(lambda x: self.projection_head(self.backbone(x)), views)
        return {"loss": sum((embedding - 1).pow(2).mean() for embedding in embeddings)}


def test_stop_on_collapse_ends_the_run_with_a_clear_error_and_its_last_checkpoint(tmp_path):
    method = CollapsingMethod()
    images = torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.zeros(64, dtype=torch.long), 16)
    two_views = lambda images, generator=None: [images.float() / 255, images.float() / 255 + 0.1]  # noqa: E731
    trainer = Trainer(method, two_views, loader, torch.optim.SGD(method.parameters(), lr=0.01), epochs=3,
                      log_every=1, progress=False, out_dir=tmp_path / "run", stop_on_collapse=True,
                      method_name="simclr")
    with pytest.raises(TrainingCollapsed, match=r"collapsed at step 5 .*higher temperature.*stop_on_collapse=true\); "
                                                r"the checkpoint of epoch 1 .* is the last good state"):
        trainer.fit()  # healthy through epoch 1 (4 steps), collapsed at the first step of epoch 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_supervised_methods_log_their_health_but_are_not_judged(tmp_path):
    # The same collapse by construction, under a method that learns from labels: logged, not warned.
    class SupervisedCollapsing(CollapsingMethod):
        requires_labels = True

    method = SupervisedCollapsing()
    images = torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.zeros(64, dtype=torch.long), 16)
    two_views = lambda images, generator=None: [images.float() / 255, images.float() / 255 + 0.1]  # noqa: E731
    trainer = Trainer(method, two_views, loader, torch.optim.SGD(method.parameters(), lr=0.01), epochs=3,
                      log_every=1, progress=False, out_dir=tmp_path / "run", stop_on_collapse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["rankme"] < 1.5


def test_health_can_be_turned_off(tmp_path):
    records, _ = train_digits(tmp_path, "quiet", health=False)
    assert not any(key in record for record in records for key in HEALTH_KEYS)


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize("together", [True, False])
def test_the_probe_sees_the_views_of_a_logged_step_only(together):
    module, probe = Doubler(), None
    probe = HealthProbe(module)
    views = [torch.randn(6, 4), torch.randn(6, 4)]
    module(torch.cat(views))  # not armed: nothing kept
    probe.armed = True
    if together:
        module(torch.cat(views))
    else:
        for view in views:
            module(view)
    metrics = probe.metrics(rows=6)
    expected = health_metrics([view * 2 for view in views])
    assert not probe.armed and probe.dim == 4
    for key, value in expected.items():
        torch.testing.assert_close(metrics[key], value)
    assert probe.metrics(rows=6) == {}  # cleared


def test_the_monitor_warns_once_as_the_state_worsens_and_stops_when_asked():
    healthy = {"embedding_std": 0.09, "rankme": 60.0, "rankme_fraction": 0.5}
    collapsing = {"embedding_std": 0.09, "rankme": 4.0, "rankme_fraction": 0.03}
    collapsed = {"embedding_std": 0.0005, "rankme": 1.1, "rankme_fraction": 0.01}
    monitor = CollapseMonitor("byol", grace_steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert monitor.check(collapsed, 128, step=5, kept="") == "healthy"  # in the grace steps: not judged
        assert monitor.check(healthy, 128, step=10, kept="") == "healthy"
        assert monitor.check(collapsing, 128, step=20, kept="") == "collapsing"
        assert monitor.check(collapsing, 128, step=30, kept="") == "collapsing"  # no second warning
        assert monitor.check(collapsed, 128, step=40, kept="") == "collapsed"
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2 and "collapsing at step 20" in messages[0] and "collapsed at step 40" in messages[1]
    assert "ema_momentum" in messages[0]  # BYOL's own advice
    # NaN embeddings give no verdict (the loss's own check reports a diverged run).
    assert monitor.check({"embedding_std": float("nan"), "rankme": float("nan")}, 128, step=60, kept="") == "collapsed"
    with pytest.raises(TrainingCollapsed, match="the checkpoint of epoch 3"):
        CollapseMonitor("byol", stop=True).check(collapsed, 128, step=50, kept="the checkpoint of epoch 3 is kept")
