"""Training on many processes: joining the process group a launcher describes, batch norm over the
global batch, and the DistributedDataParallel step.

The contract: W processes, each holding 1/W of every global batch, take exactly the optimizer step
of one process holding the whole batch. The losses span processes (gathers and sums whose backward
hands each process the gradient of every process's loss, :mod:`contrastkit._distributed`), each
process's loss averages to the global loss over the processes, and DistributedDataParallel averages
the parameter gradients. Batch norm over the global batch (``sync_batchnorm``) makes the
statistics equal too.

Launchers: ``torchrun`` (and anything else that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), or SLURM's ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``, with ``MASTER_ADDR`` and ``MASTER_PORT`` set by the job script).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastkit._distributed import all_reduce_with_grad, is_distributed
from contrastkit.errors import ConfigError

# Rank 0 evaluates while the others wait at the end of a run; collectives may wait that long.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands: its rank among ``world_size``, and its rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The one process that writes the run folder and evaluates."""
        return self.rank == 0


def launcher_environment(environ: Mapping[str, str] | None = None) -> ProcessGroup:
    """The process group a launcher describes in the environment (torchrun's ``RANK`` /
    ``WORLD_SIZE`` / ``LOCAL_RANK``, else SLURM's ``SLURM_PROCID`` / ``SLURM_NTASKS`` /
    ``SLURM_LOCALID``); a single process when there is none."""
    environ = os.environ if environ is None else environ
    for rank, world, local in (("RANK", "WORLD_SIZE", "LOCAL_RANK"),
                               ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if world in environ and rank in environ:
            try:
                group = ProcessGroup(int(environ[rank]), int(environ[world]), int(environ.get(local, 0)))
            except ValueError:
                raise ConfigError(f"the launcher's {rank}={environ[rank]!r}, {world}={environ[world]!r} are not "
                                  "integers; check how the job was started.") from None
            if not 0 <= group.rank < group.world_size:
                raise ConfigError(f"the launcher says this is process {group.rank} of {group.world_size}; check "
                                  "how the job was started.")
            return group
    return ProcessGroup()


def init_process_group(device: torch.device) -> ProcessGroup:
    """Join the process group the launcher describes (NCCL for CUDA, gloo otherwise), unless one is
    already running or there is a single process. Returns where this process stands."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    group = launcher_environment()
    if group.world_size == 1:
        return group
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(f"{group.world_size} processes were launched but {' and '.join(missing)} is not set, so "
                          "they cannot find each other. torchrun sets it; under srun, export "
                          "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) and "
                          "MASTER_PORT=29500 in the job script.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's communicators and barriers use the current device
    dist.init_process_group(backend, init_method="env://", rank=group.rank, world_size=group.world_size,
                            timeout=PROCESS_GROUP_TIMEOUT)
    return group


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over every process's batch, for CPU processes (gloo), where torch's
    ``SyncBatchNorm`` refuses to run (and DistributedDataParallel refuses it).

    In training under torch.distributed the mean and the biased variance are taken over the global
    batch (two differentiable all-reduces, :func:`all_reduce_with_grad`), so the output and the
    gradients are those of ``BatchNorm`` on the global batch; elsewhere it is plain batch norm. The
    running statistics follow BatchNorm's rule with the global batch's unbiased variance.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.numel() // input.shape[1] * dist.get_world_size()
        mean = all_reduce_with_grad(input.sum(dims)) / count
        centred = input - mean.view(shape)
        variance = all_reduce_with_grad(centred.pow(2).sum(dims)) / count
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = variance.detach() * count / max(count - 1, 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return output


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of ``module`` made to normalise over the global batch: torch's
    ``SyncBatchNorm`` on CUDA, :class:`SyncBatchNorm` elsewhere. Parameters and buffers are kept
    (the optimizer's references stay valid) and so are the state-dict keys, so checkpoints load
    with or without it."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        converted = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats, device=device)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


class TrainingStep(nn.Module):
    """``method.training_step`` as a module's forward, so that DistributedDataParallel's gradient
    hooks see the step."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, views: Sequence[Any], labels: Tensor, validate: bool) -> dict[str, Tensor]:
        return self.method.training_step(views, labels, validate=validate)


def wrap_training_step(method: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """The module the trainer calls for a step: :class:`TrainingStep`, inside DistributedDataParallel
    when several processes train.

    Buffers are not broadcast from rank 0 at every step: the ones the methods keep (queues, DINO's
    centre, momentum encoders, synchronised batch-norm statistics) are the same on every process by
    construction, and a queue would cost a copy of itself per step.
    """
    step = TrainingStep(method)
    if not is_distributed():
        return step
    # Newer torch names the switch forward_sync_buffers (and deprecates broadcast_buffers).
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    return ddp(step, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters, **no_buffer_sync)
