"""The encoder of the AtariARI benchmark: a Nature-DQN-style CNN on full-size 210 x 160 frames.

Four convolutions (32 8x8 stride 4, 64 4x4 stride 2, 128 4x4 stride 2, 64 3x3 stride 1, each
followed by a ReLU) and a linear layer to a 256-dim feature, without a final ReLU, initialised
orthogonally (ReLU gain) with zero biases, as Anand et al. (2019) train and probe it. On a
(1, 210, 160) frame the third convolution's output is the (128, 11, 8) local feature map that
ST-DIM contrasts (:func:`contrastkit.losses.stdim.stdim_loss`); the last one is (64, 9, 6).

The benchmark's RANDOM-CNN baseline is this encoder untrained: ``AtariEncoder()`` with a seed set.

Example:
    >>> encoder = AtariEncoder()
    >>> features, local = encoder.forward_maps(torch.zeros(2, 1, 210, 160, dtype=torch.uint8))
    >>> tuple(features.shape), tuple(local.shape)
    ((2, 256), (2, 128, 11, 8))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit._checks import check_count, check_ndim
from contrastkit.errors import InputError

__all__ = ["AtariEncoder"]


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class AtariEncoder(nn.Module):
    """NatureCNN as AtariARI uses it (module docstring).

    Args:
        in_channels: channels per input (1: AtariARI's grayscale frames, no stack).
        feature_dim: the output feature size (AtariARI: 256).
        frame_size: the (H, W) of the input frames (AtariARI: 210 x 160, the full screen).
    """

    def __init__(self, in_channels: int = 1, feature_dim: int = 256, frame_size: tuple[int, int] = (210, 160)):
        super().__init__()
        check_count("in_channels", in_channels, 1, "AtariARI probes single grayscale frames (1).")
        check_count("feature_dim", feature_dim, 1, "AtariARI uses 256.")
        self.in_channels, self.feature_dim, self.frame_size = in_channels, feature_dim, tuple(frame_size)
        h, w = self.frame_size
        for kernel, stride in ((8, 4), (4, 2), (4, 2), (3, 1)):
            h, w = _conv_out(h, kernel, stride), _conv_out(w, kernel, stride)
        if h < 1 or w < 1:
            raise InputError(f"frame_size {self.frame_size} is too small for the encoder's four convolutions; "
                             "AtariARI uses (210, 160).")
        self.local = nn.Sequential(nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
                                   nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                                   nn.Conv2d(64, 128, 4, stride=2), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(128, 64, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(64 * h * w, feature_dim)
        gain = nn.init.calculate_gain("relu")
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain)
                nn.init.zeros_(module.bias)

    @property
    def local_dim(self) -> int:
        """The channels of the local feature map (128)."""
        return 128

    def _input(self, frames: Tensor) -> Tensor:
        check_ndim("frames", frames, 4, "(batch, channels, height, width)")
        if frames.shape[1] != self.in_channels or tuple(frames.shape[2:]) != self.frame_size:
            raise InputError(f"frames have shape {tuple(frames.shape[1:])} per frame but the encoder takes "
                             f"({self.in_channels}, {self.frame_size[0]}, {self.frame_size[1]}); AtariARI feeds "
                             "full-size grayscale frames.")
        if frames.dtype == torch.uint8:
            # Pixels to [0, 1], as AtariARI scales them before the encoder.
            return frames.to(self.fc.weight.dtype) / 255.0
        if not frames.is_floating_point():
            raise InputError(f"frames must be uint8 pixels or floats in [0, 1], got {frames.dtype}.")
        return frames

    def forward_maps(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """The (B, feature_dim) features and the (B, 128, 11, 8) local feature map of ``frames``.

        Args:
            frames: (B, C, 210, 160) uint8 pixels (scaled by 1/255 here) or floats in [0, 1].
        """
        local = self.local(self._input(frames))
        return self.fc(self.top(local)), local

    def forward(self, frames: Tensor) -> Tensor:
        """The (B, feature_dim) features of ``frames`` (see :meth:`forward_maps`)."""
        return self.forward_maps(frames)[0]
