"""Batch norm over groups of the batch, as if each group sat on its own GPU: MoCo's shuffling BN on
one device.

MoCo computes its keys on a batch shuffled across GPUs, so that a query and its key never share
batch-norm statistics, which would let the model find the positive by them. With one GPU the
authors' CIFAR-10 demo (facebookresearch/moco, colab branch) splits each batch-norm layer's batch
into 8 groups, as 8 GPUs would, and shuffles the keys' batch before the key encoder; lightly's
CIFAR-10 benchmark does the same.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import ConfigError


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm that, in training, normalises each of ``num_splits`` groups of the batch by the
    group's own statistics (group j: rows j, j + num_splits, ...); the running statistics move by
    the mean of the groups' updates, and evaluation uses them as batch norm does. The parameters
    and buffers are batch norm's, so state dicts load either way.

    Args:
        num_features: channels (dim 1 of the input).
        num_splits: groups per batch; the batch size must be a multiple of it.
        **kwargs: batch norm's own (eps, momentum, affine).

    Example:
        >>> norm = SplitBatchNorm(16, num_splits=4)
        >>> norm(torch.randn(8, 16, 5, 5)).shape
        torch.Size([8, 16, 5, 5])
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ConfigError(f"num_splits must be at least 1, got {num_splits}.")
        self.num_splits = num_splits

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ConfigError(f"batch norm takes (batch, channels, ...) inputs, got shape {tuple(input.shape)}.")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or self.num_splits == 1:
            return super().forward(input)
        rows, channels = input.shape[:2]
        if rows % self.num_splits:
            raise ConfigError(f"a batch of {rows} rows does not split into {self.num_splits} batch-norm groups; "
                              f"use a batch size divisible by {self.num_splits}, or fewer splits.")
        if rows == self.num_splits and input[0, 0].numel() == 1:
            raise ConfigError(f"a batch of {rows} rows in {self.num_splits} batch-norm groups leaves each group one "
                              "value per channel, which has no variance; use a larger batch, or fewer splits.")
        splits = self.num_splits
        # (rows, C, ...) viewed as (rows / splits, splits * C, ...): channel block j holds group j.
        grouped = input.reshape(rows // splits, splits * channels, *input.shape[2:])
        running_mean = self.running_mean.repeat(splits) if self.running_mean is not None else None
        running_var = self.running_var.repeat(splits) if self.running_var is not None else None
        weight = self.weight.repeat(splits) if self.weight is not None else None
        bias = self.bias.repeat(splits) if self.bias is not None else None
        momentum = self.momentum
        if running_mean is not None:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative average, as batch norm keeps with momentum=None
                momentum = 1.0 / float(self.num_batches_tracked)
        output = F.batch_norm(grouped, running_mean, running_var, weight, bias, True, momentum or 0.0, self.eps)
        if running_mean is not None:
            self.running_mean.copy_(running_mean.view(splits, channels).mean(0))
            self.running_var.copy_(running_var.view(splits, channels).mean(0))
        return output.view_as(input)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def split_batch_norm(module: nn.Module, num_splits: int) -> nn.Module:
    """``module`` with every batch-norm layer (1-d, 2-d or 3-d) replaced by a
    :class:`SplitBatchNorm` of ``num_splits`` groups holding its parameters and statistics;
    ``module`` itself when ``num_splits`` is 1.

    Args:
        module: a backbone or head.
        num_splits: groups per batch.
    """
    if num_splits == 1:
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SplitBatchNorm):
        like = module.weight if module.weight is not None else module.running_mean
        placement = {} if like is None else dict(device=like.device, dtype=like.dtype)
        split = SplitBatchNorm(module.num_features, num_splits, eps=module.eps, momentum=module.momentum,
                               affine=module.affine, track_running_stats=module.track_running_stats, **placement)
        split.load_state_dict(module.state_dict())
        split.train(module.training)
        return split
    for name, child in module.named_children():
        module.add_module(name, split_batch_norm(child, num_splits))
    return module
