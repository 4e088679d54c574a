"""Reading the NaN padding of series of unequal length: which timesteps a series (N, C, T) has, and
how long it is.

:mod:`contrastkit.data.series` pads the series it loads this way, and the series augmentations and
evaluations read the padding back; the rule lives here, below all three, so that reading it does not
make augment and evaluate depend on the data loaders.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit._checks import check_ndim


def observed_mask(values: Tensor) -> Tensor:
    """bool (N, T): True where a series has a value in at least one channel (False on NaN padding).

    Example:
        >>> values = torch.tensor([[[1.0, 2.0, float("nan")]]])
        >>> observed_mask(values)
        tensor([[ True,  True, False]])
    """
    check_ndim("values", values, 3, "(N, C, T)")
    return ~torch.isnan(values).all(dim=1)


def observed_lengths(values: Tensor) -> Tensor:
    """int64 (N,): each series' length, one past its last observed position (0 for an all-NaN row).

    A NaN inside a series (a missing value) does not shorten it; only the padding after its last
    value does.

    Example:
        >>> nan = float("nan")
        >>> observed_lengths(torch.tensor([[[1.0, nan, 2.0, nan]], [[nan, nan, nan, nan]]]))
        tensor([3, 0])
    """
    observed = observed_mask(values)
    positions = torch.arange(1, observed.shape[1] + 1, device=values.device)
    return (observed * positions).amax(dim=1)
