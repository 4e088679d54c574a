"""What the health metrics cost a run, as JSON: the training step of a config, and the health
metrics of one logged step's embeddings (:class:`contrastkit.train.health.HealthProbe`, taken once
every ``log_every`` steps), so the overhead is their time over ``log_every`` steps' time.

    python benchmarks/health_overhead.py                        # the quick start: SimCLR on MNIST
    python benchmarks/health_overhead.py dataset=cifar10 data_root=data/cifar10-jpeg.npz backbone=resnet18
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch

from contrastkit import config as config_module
from contrastkit.runs import Run
from contrastkit.train.health import HealthProbe


def seconds(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, as for contrastkit train")
    args = parser.parse_args()
    values = {"progress": False, **config_module.parse_overrides(args.overrides)}
    config = config_module.resolve(config_module.update(config_module.Config(), values))
    run = Run(config)
    method, device = run.method.train(), run.device
    loader = run.modality.loader(run)
    images, labels = next(iter(loader.epoch(0)))
    generator = torch.Generator().manual_seed(0)
    views = run.augment(images, generator=generator)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step() -> None:
        loss = method.training_step(views, labels, validate=False)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    probe = HealthProbe(method.embedding_module())
    probe.armed = True
    with torch.no_grad():
        method.training_step(views, labels, validate=False)
    kept = list(probe._outputs)
    rows = labels.shape[0]

    def health() -> None:
        probe._outputs, probe.armed = list(kept), True
        values = probe.metrics(rows)
        torch.stack(list(values.values())).tolist()  # read back, as the trainer does at a log line

    step_seconds = seconds(step, device, args.repeats)
    health_seconds = seconds(health, device, args.repeats)
    interval = config.log_every * step_seconds
    print(json.dumps({
        "device": torch.cuda.get_device_name() if device.type == "cuda" else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "date": date.today().isoformat(), "torch": torch.__version__, "method": config.method,
        "dataset": config.dataset, "backbone": config.backbone, "batch_size": config.batch_size,
        "embedding_dim": probe.dim, "log_every": config.log_every, "step_ms": round(step_seconds * 1e3, 2),
        "health_ms_per_logged_step": round(health_seconds * 1e3, 3),
        "overhead_share": round(health_seconds / interval, 5)}, indent=1))


if __name__ == "__main__":
    main()
