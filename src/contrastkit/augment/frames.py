"""Random shifts and crops of frame stacks: the image augmentations of pixel-based RL agents.

An agent observes stacks of its last frames, one batch of shape (N, C * stack, H, W), uint8 as the
environment renders them or already float. Two augmentations make the views its contrastive loss
or its critic trains on:

* :class:`RandomShift` (DrQ, Kostrikov et al. 2020): pad every side by ``pad`` pixels repeating
  the border, then crop back to (H, W) at a random offset; a shift of up to ``pad`` pixels.
* :class:`RandomCrop` (CURL, Srinivas et al. 2020): crop a random ``size`` window from a larger
  frame (CURL renders 100 x 100 and crops 84 x 84); :func:`center_crop` is its evaluation-time
  counterpart.

Every channel of a stack moves together (the frames of one observation stay aligned), each sample
by its own offset. The offsets are drawn on the CPU from the given ``torch.Generator`` (torch's
default CPU generator without one) and moved to the batch's device without blocking; the crop
itself is two gathers on that device, for any dtype, with no host sync, so a seed gives the same
views on the CPU and on a GPU. Frames come back in their dtype.

Example:
    >>> frames = torch.randint(0, 256, (8, 9, 100, 100), dtype=torch.uint8)  # 3 RGB frames stacked
    >>> views = RandomCrop(84)(frames, torch.Generator().manual_seed(0))
    >>> views.shape, views.dtype
    (torch.Size([8, 9, 84, 84]), torch.uint8)
    >>> RandomShift(pad=4)(views, torch.Generator().manual_seed(0)).shape
    torch.Size([8, 9, 84, 84])
"""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch
from torch import Tensor

from contrastkit._checks import check_ndim
from contrastkit.augment.image import BatchTransform, Params, params_to
from contrastkit.errors import ConfigError, InputError

__all__ = ["RandomShift", "RandomCrop", "center_crop", "crop_at"]

LAYOUT = "(N, C * stack, H, W)"


def _check_frames(frames: Tensor) -> None:
    check_ndim("frames", frames, 4, LAYOUT)
    if not (frames.dtype == torch.uint8 or frames.is_floating_point()):
        raise InputError(f"frames must be uint8 or floating point {LAYOUT}, got dtype {frames.dtype}; "
                         "convert with .to(torch.uint8) or .float().")


def _crop_size(size: int | Sequence[int]) -> tuple[int, int]:
    try:
        pair = (size, size) if isinstance(size, Integral) else tuple(size)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ConfigError(f"size must be a positive integer or a (height, width) pair of them, got {size!r}.")
    return int(pair[0]), int(pair[1])


def _check_fits(frames: Tensor, height: int, width: int) -> None:
    if height > frames.shape[2] or width > frames.shape[3]:
        raise InputError(f"a {height} x {width} crop does not fit in frames of {frames.shape[2]} x {frames.shape[3]}; "
                         "render larger frames or crop smaller.")


def crop_at(frames: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """The ``height`` x ``width`` window of each frame stack starting at (``top``, ``left``).

    Rows and columns that fall outside the frame read its nearest border pixel (replicate
    padding), so negative offsets and windows past the edge are allowed.

    Args:
        frames: (N, C * stack, H, W), uint8 or floating point.
        top, left: (N,) integer offsets, on ``frames``' device.
        height, width: size of the window.

    Example:
        >>> frames = torch.arange(16.0).view(1, 1, 4, 4)
        >>> crop_at(frames, torch.tensor([-1]), torch.tensor([2]), 2, 3)
        tensor([[[[2., 3., 3.],
                  [2., 3., 3.]]]])
    """
    n, c, h, w = frames.shape
    rows = (top[:, None] + torch.arange(height, device=frames.device)).clamp(0, h - 1)
    cols = (left[:, None] + torch.arange(width, device=frames.device)).clamp(0, w - 1)
    picked_rows = frames.gather(2, rows[:, None, :, None].expand(n, c, height, w))
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, c, height, width))


def center_crop(frames: Tensor, size: int | Sequence[int]) -> Tensor:
    """The centred ``size`` window of every frame stack: what CURL's agent sees at evaluation time.

    Args:
        frames: (N, C * stack, H, W), uint8 or floating point.
        size: the window, an int or (height, width), no larger than the frames.

    Example:
        >>> center_crop(torch.zeros(2, 3, 100, 100), 84).shape
        torch.Size([2, 3, 84, 84])
    """
    _check_frames(frames)
    height, width = _crop_size(size)
    _check_fits(frames, height, width)
    top, left = (frames.shape[2] - height) // 2, (frames.shape[3] - width) // 2
    return frames[:, :, top:top + height, left:left + width]


class _FrameTransform(BatchTransform):
    """A crop at per-sample offsets drawn in ``sample_params``; ``forward`` takes uint8 or float frames."""

    def forward(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:  # type: ignore[override]
        _check_frames(frames)
        return self.apply(frames, params_to(self.sample_params(frames, generator), frames.device))


class RandomShift(_FrameTransform):
    """DrQ's random shift: replicate-pad by ``pad`` pixels, then crop back to (H, W) at a random
    offset per sample, i.e. move the frame by up to ``pad`` pixels each way, repeating its border.

    Args:
        pad: the largest shift in pixels, >= 0 (DrQ: 4 for 84 x 84 frames); 0 returns the frames.

    Example:
        >>> frames = torch.rand(4, 6, 84, 84)
        >>> RandomShift(pad=0)(frames).equal(frames)
        True
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        if not (isinstance(pad, Integral) and not isinstance(pad, bool) and pad >= 0):
            raise ConfigError(f"pad must be an integer >= 0 (DrQ uses 4 for 84 x 84 frames), got {pad!r}.")
        self.pad = int(pad)

    def sample_params(self, frames: Tensor, generator: torch.Generator | None = None) -> Params:
        """Per-sample shifts (N,) in [-pad, pad], rows and columns, drawn on the CPU."""
        _check_frames(frames)
        shifts = torch.randint(-self.pad, self.pad + 1, (2, frames.shape[0]), generator=generator)
        return {"top": shifts[0], "left": shifts[1]}

    def apply(self, frames: Tensor, params: Params) -> Tensor:
        """Shift each sample by its ``params`` (deterministic)."""
        return crop_at(frames, params["top"], params["left"], frames.shape[2], frames.shape[3])

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class RandomCrop(_FrameTransform):
    """CURL's random crop: a ``size`` window at a random position inside each frame stack.

    Args:
        size: the window, an int or (height, width), no larger than the frames (CURL: 84 from 100).

    Example:
        >>> RandomCrop((64, 48))(torch.zeros(2, 3, 80, 80)).shape
        torch.Size([2, 3, 64, 48])
    """

    def __init__(self, size: int | Sequence[int] = 84) -> None:
        super().__init__()
        self.size = _crop_size(size)

    def sample_params(self, frames: Tensor, generator: torch.Generator | None = None) -> Params:
        """Per-sample window corners (N,), uniform over the positions that keep the window inside."""
        _check_frames(frames)
        height, width = self.size
        _check_fits(frames, height, width)
        n = frames.shape[0]
        top = torch.randint(0, frames.shape[2] - height + 1, (n,), generator=generator)
        left = torch.randint(0, frames.shape[3] - width + 1, (n,), generator=generator)
        return {"top": top, "left": left}

    def apply(self, frames: Tensor, params: Params) -> Tensor:
        """Crop each sample at its ``params`` (deterministic)."""
        return crop_at(frames, params["top"], params["left"], *self.size)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.size

    def extra_repr(self) -> str:
        return f"size={self.size}"
