"""The training loop, for any modality: views of each batch, step, log every N steps, checkpoint every epoch.

A batch is whatever the loader yields (a uint8 image tensor, a tuple of sentence lists) and a view
whatever the augmentation makes of it (an image tensor, a dict of token tensors); the loop only
passes them on, to the augmentation and then to the method.

The loop reads the loss back to the host only every ``log_every`` steps and nothing else in a step
waits for the device (augmentation parameters are drawn on the CPU and copied without blocking), so
the CPU queues the next step while the GPU runs this one. An epoch's data order and augmentations
depend only on (seed, epoch), on any device, and checkpoints are taken at epoch ends, so
``fit(resume=True)`` reproduces the uninterrupted run.

Under torch.distributed each process steps on its slice of every global batch through
DistributedDataParallel (:mod:`contrastkit.train.distributed`). A preset's augmentation
parameters are drawn for the whole global batch on every process and sliced, so a sample is
augmented the same way whatever the number of processes, and a run can resume on another number
of processes. Only rank 0 writes logs and checkpoints; the logged loss is the global batch's.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from contrastkit._atomic import write_atomic
from contrastkit._distributed import all_reduce_sum
from contrastkit.augment import MultiView, params_to
from contrastkit.data.device_loader import BatchLoader, epoch_generator
from contrastkit.errors import ConfigError, ContrastkitError
from contrastkit.methods.base import Progress, view_rows
from contrastkit.methods.registry import METHODS
from contrastkit.train.checkpoint import load_checkpoint, save_atomic
from contrastkit.train.distributed import wrap_training_step
from contrastkit.train.health import CollapseMonitor, HealthProbe
from contrastkit.train.schedules import LR_SCHEDULES

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The health metrics a logged step records (metrics.jsonl, TensorBoard's health/ scalars).
HEALTH_KEYS = ("embedding_std", "rankme", "rankme_fraction", "alignment", "uniformity", "positive_negative_gap")
# Steps of the first epoch left unjudged by the collapse monitor (see Trainer.__init__).
COLLAPSE_GRACE_STEPS = 20


class TrainingDiverged(ContrastkitError):
    """The loss became NaN or infinite."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, skipping a line a crash cut short mid-write."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


@dataclass
class TrainerState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    train_seconds: float = 0.0


class Trainer:
    """Runs ``method.training_step(augment(batch), labels)`` over a :class:`DeviceLoader` or
    :class:`HostLoader`.

    Args:
        method: a :class:`contrastkit.methods.Method` (``training_step(views, labels, validate=...)
            -> {"loss": ...}`` and the step hooks).
        augment: a preset's :class:`MultiView` (its parameters are drawn on the CPU, its ``apply``
            compiled with the step), or any callable mapping a batch and a CPU generator to views.
        loader: shuffled ``(batch, labels)`` on the training device.
        optimizer: its param groups' ``lr`` is the peak; the schedule scales it per step.
        warmup_epochs: linear warm-up to the peak, in epochs.
        lr_schedule: after the warm-up, "cosine" (decay to 0 at the end) or "constant" (the peak).
        out_dir: run folder for metrics.jsonl, tensorboard/ and checkpoints/ (None: keep nothing).
        precision: "fp32", "bf16" or "fp16" (autocast; fp16 adds gradient scaling).
        compile: ``torch.compile`` the forward-backward step and the augmentation's ``apply``.
        compile_mode: torch.compile's mode: "default", "reduce-overhead" (CUDA graphs),
            "max-autotune" or "max-autotune-no-cudagraphs".
        callbacks: called with the state after every epoch's checkpoint.
        find_unused_parameters: under torch.distributed, let DistributedDataParallel look for
            parameters a step leaves without gradient (e.g. a transformer's unused pooler).
        health: log the health metrics of the method's embeddings at every logged step
            (:mod:`contrastkit.train.health`) and warn when they say the embeddings collapse.
        stop_on_collapse: end the run (:class:`TrainingCollapsed`) when they say collapsed.
        method_name: the method's registry name, for the collapse warning's advice (default: the
            name ``method``'s class is registered under).
    """

    def __init__(self, method: nn.Module, augment: Callable[..., Sequence[Any]], loader: BatchLoader,
                 optimizer: torch.optim.Optimizer, *, epochs: int, warmup_epochs: float = 0.0,
                 lr_schedule: str = "cosine",
                 out_dir: str | Path | None = None, precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False, compile_mode: str = "default", log_every: int = 20, progress: bool = True,
                 checkpoint_extra: dict[str, Any] | None = None,
                 callbacks: Sequence[Callable[[TrainerState], None]] = (),
                 find_unused_parameters: bool = False, health: bool = True, stop_on_collapse: bool = False,
                 method_name: str | None = None) -> None:
        self.method = method
        self.augment = augment
        self.loader = loader
        self.optimizer = optimizer
        self.epochs = epochs
        self.device = loader.device
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # Every process reads the run folder (to resume); rank 0 alone writes it.
        self.writes = loader.rank == 0 and self.out_dir is not None
        self.precision = precision
        self.channels_last = channels_last
        self.log_every = log_every
        self.progress = progress
        self.checkpoint_extra = checkpoint_extra or {}
        self.callbacks = list(callbacks)
        self.steps_per_epoch = len(loader)
        self.total_steps = epochs * self.steps_per_epoch
        self.warmup_steps = int(warmup_epochs * self.steps_per_epoch)
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}.")
        self.lr_schedule = LR_SCHEDULES[lr_schedule]
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.state = TrainerState()
        # Epochs completed and saved in out_dir's checkpoint (None: no checkpoint written yet).
        self.checkpointed_epoch: int | None = None
        if channels_last:
            method.to(memory_format=torch.channels_last)
        # The embeddings the loss compares (a Method says which module gives them), else the backbone's.
        watched = (method.embedding_module() if hasattr(method, "embedding_module")
                   else getattr(method, "backbone", None))
        self.probe = HealthProbe(watched) if health and isinstance(watched, nn.Module) else None
        registered = [name for name in METHODS.names() if METHODS.get(name) is type(method)]
        # The first epoch's first steps are not judged: at initialisation a network often maps
        # every input near one direction until training spreads it (evaluate.health's measurements).
        self.monitor = CollapseMonitor(method_name or next(iter(registered), type(method).__name__),
                                       stop=stop_on_collapse,
                                       grace_steps=min(self.steps_per_epoch, COLLAPSE_GRACE_STEPS))
        # Supervised methods (SupCon, AAM-softmax) are not judged: they gather each class's embeddings
        # around one direction by design, a rank near the number of classes that reads as collapse.
        self.judge_collapse = not getattr(method, "requires_labels", False)
        self._training_step = wrap_training_step(method, self.device, find_unused_parameters=find_unused_parameters)
        self._step = torch.compile(self._train_step, mode=compile_mode) if compile else self._train_step
        # A MultiView splits into CPU sampling and a device-side apply with no host sync, which
        # compiles as one graph; any other callable is called as it is.
        self._augment_apply = augment.apply if isinstance(augment, MultiView) else None
        if compile and self._augment_apply is not None:
            self._augment_apply = torch.compile(self._augment_apply, mode=compile_mode, fullgraph=True)

    # -- the hot path ---------------------------------------------------------------------
    def _train_step(self, views: Sequence[Any], labels: Tensor) -> Tensor:
        dtype = AUTOCAST_DTYPES.get(self.precision)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = self._training_step(views, labels, False)["loss"]
        self.scaler.scale(loss).backward()
        return loss.detach()

    def _augment(self, batch: Any, generator: torch.Generator) -> Sequence[Any]:
        if self._augment_apply is None:
            return self.augment(batch, generator=generator)
        images = batch
        # Drawn for the global batch (every process's equal share; only the shape is read), then
        # this process's rows.
        rows, world = images.shape[0], self.loader.world_size
        params = self.augment.sample_params(images.new_zeros(()).expand(rows * world, *images.shape[1:]), generator)
        if world > 1:
            start = self.loader.rank * rows
            params = tree_map(lambda leaf: leaf[start:start + rows], params)
        # Moved before the (compiled) apply, so its graph holds no host-to-device copy.
        return self._augment_apply(images, params_to(params, images.device))

    def _set_lr(self, step: int) -> float:
        factor = self.lr_schedule(step, self.total_steps, self.warmup_steps)
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            group["lr"] = peak * factor
        return self.peak_lrs[0] * factor

    def fit(self, resume: bool = False) -> TrainerState:
        """Train to ``epochs``; with ``resume`` continue from the run folder's last checkpoint."""
        if resume:
            self._resume()
        writer = self._open_writers()
        self.method.train()
        try:
            for epoch in range(self.state.epoch, self.epochs):
                self._run_epoch(epoch, writer)
                self.state.epoch = epoch + 1
                if self.out_dir is not None:
                    self._save_checkpoint()
                    self.checkpointed_epoch = self.state.epoch
                for callback in self.callbacks:
                    callback(self.state)
        finally:
            if writer is not None:
                writer.close()
        return self.state

    def _run_epoch(self, epoch: int, writer: Any) -> None:
        from tqdm.auto import tqdm

        main = self.loader.rank == 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=not (self.progress and main), dynamic_ncols=True, leave=False)
        epoch_start = time.perf_counter()
        try:
            mean_loss = self._run_steps(epoch, writer, bar)
        finally:
            bar.close()  # before any error message, which would otherwise land on the bar's line
        self.state.train_seconds += time.perf_counter() - epoch_start
        if main:  # with or without the bar: a long epoch should not pass in silence
            print(f"epoch {epoch + 1}/{self.epochs}  loss {mean_loss:.4f}  "
                  f"{self.state.train_seconds:.0f}s", flush=True)

    def _run_steps(self, epoch: int, writer: Any, bar: Any) -> float:
        """One epoch's steps; returns the mean loss of its last logging interval."""
        # On the CPU whatever the device, like the data order: the same seed, the same batches anywhere.
        # A preset (or ImageTextViews) draws the global batch's parameters on every process; any
        # other augmentation draws for its own samples, so each process needs a stream of its own.
        shared = self._augment_apply is not None or getattr(self.augment, "draws_for_global_batch", False)
        stream = 1 if shared else 1 + self.loader.rank
        augment_generator = epoch_generator(self.loader.seed, epoch, stream=stream)
        loss_sum = torch.zeros((), device=self.device)
        interval_steps, interval_start = 0, time.perf_counter()
        mean_loss = math.nan
        for batch, labels in self.loader.epoch(epoch):
            lr = self._set_lr(self.state.step)
            progress = Progress(self.state.step, self.total_steps, self.steps_per_epoch)
            views = self._augment(batch, augment_generator)
            if self.channels_last:  # image views only: other modalities have no channel dimension
                views = [view.contiguous(memory_format=torch.channels_last)
                         if isinstance(view, Tensor) and view.ndim == 4 else view for view in views]
            self.method.on_step_start(progress)
            logs_now = (self.state.step + 1) % self.log_every == 0 or (self.state.step + 1) % self.steps_per_epoch == 0
            if self.probe is not None:
                self.probe.armed = logs_now  # the embeddings are kept for logged steps only
            loss = self._step(views, labels)
            health = self.probe.metrics(view_rows(views[0])) if self.probe is not None and logs_now else {}
            self.method.on_before_optimizer_step(progress)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.method.on_step_end(progress)
            loss_sum += loss.float()
            self.state.step += 1
            interval_steps += 1
            bar.update(1)
            last_of_epoch = self.state.step % self.steps_per_epoch == 0
            if self.state.step % self.log_every == 0 or last_of_epoch:
                # The one host sync per interval; the mean over the processes is the global batch's loss.
                mean_loss = (all_reduce_sum(loss_sum) / (interval_steps * self.loader.world_size)).item()
                elapsed = time.perf_counter() - interval_start
                record = {"step": self.state.step, "epoch": round(self.state.step / self.steps_per_epoch, 4),
                          "loss": mean_loss, "lr": lr,
                          "samples_per_second": interval_steps * self.loader.batch_size / elapsed,
                          **self._health_values(health)}
                self._check_finite(mean_loss, epoch, lr)
                self._log(record, writer)
                shown = {"rankme": f"{record['rankme']:.1f}"} if "rankme" in record else {}
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.3g}", per_s=f"{record['samples_per_second']:.0f}",
                                **shown)
                if health and self.judge_collapse:
                    self.monitor.check(record, self.probe.dim, self.state.step, self._kept_checkpoint())
                loss_sum.zero_()
                interval_steps, interval_start = 0, time.perf_counter()
        return mean_loss

    def _health_values(self, health: dict[str, Tensor]) -> dict[str, float]:
        """The step's health metrics as floats, averaged over the processes so that every process
        judges the same values (read after the loss's sync, so they wait for nothing)."""
        if not health:
            return {}
        values = all_reduce_sum(torch.stack(list(health.values()))) / self.loader.world_size
        return dict(zip(health, values.tolist()))

    def _kept_checkpoint(self) -> str:
        if self.checkpointed_epoch:
            return f"the checkpoint of epoch {self.checkpointed_epoch} in {self.checkpoint_path} is the last good state"
        return "no checkpoint was written before it"

    def _check_finite(self, loss: float, epoch: int, lr: float) -> None:
        if math.isfinite(loss):
            return
        kept = self._kept_checkpoint()
        raise TrainingDiverged(
            f"the loss became {loss} by step {self.state.step} (epoch {epoch + 1}, lr {lr:.3g}); {kept}. "
            "Lower the learning rate or add warmup_epochs, and check the data for NaN.")

    # -- logs and checkpoints -----------------------------------------------------------------
    def _open_writers(self) -> Any:
        if not self.writes:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.state.step or None)

    def _log(self, record: dict[str, float], writer: Any) -> None:
        if not self.writes:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        for key in ("loss", "lr", "samples_per_second"):
            writer.add_scalar(f"train/{key}", record[key], record["step"])
        for key in HEALTH_KEYS:
            if key in record:
                writer.add_scalar(f"health/{key}", record[key], record["step"])

    @property
    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise ContrastkitError("this Trainer has no out_dir, so it keeps no checkpoints.")
        return self.out_dir / "checkpoints" / "last.pt"

    def _save_checkpoint(self) -> None:
        if not self.writes:
            return
        try:
            save_atomic({"method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scaler": self.scaler.state_dict(), "trainer": asdict(self.state),
                         **self.checkpoint_extra}, self.checkpoint_path)
        except OSError as error:  # a full disk, a quota, a file-size limit: the user's to fix, and say so
            kept = (f"the checkpoint of epoch {self.checkpointed_epoch} is kept" if self.checkpointed_epoch
                    else "no earlier checkpoint exists")
            raise ContrastkitError(
                f"could not write the checkpoint of epoch {self.state.epoch} to {self.checkpoint_path} "
                f"({error.strerror}); {kept}. Free space there (or raise the limit) and continue with: "
                f"contrastkit train --out {self.out_dir} --resume") from error

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.checkpoint_path, map_location=self.device)
        self.method.load_state_dict(checkpoint["method"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainerState(**checkpoint["trainer"])
        self.checkpointed_epoch = self.state.epoch
        # Drop log lines of the interrupted epoch (and one a kill cut short): they are written
        # again as it reruns.
        metrics = self.out_dir / "metrics.jsonl"
        if self.writes and metrics.exists():
            kept = [record for record in read_metrics(metrics) if record["step"] <= self.state.step]
            write_atomic(metrics, lambda file: file.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
