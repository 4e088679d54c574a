"""Time series encoders: (B, C, T) series to per-timestep representations and to one vector each.

Every encoder here is a :class:`SeriesEncoder`:

* ``encode_timesteps(x)`` gives (B, T, D), a representation of every timestep;
* ``forward(x)`` gives (B, D) = ``feature_dim``, the maximum over the observed timesteps of the
  per-timestep representations (TS2Vec's instance representation for classification).

:class:`PyramidPooling` wraps one to pool a temporal pyramid instead: the maximum over the whole
observed span, over each of its halves and over each of its quarters, concatenated (7 D). Where
in a series a shape occurs then survives the pooling: a gain where position matters (ArrowHead),
a loss where it does not (OSULeaf's outlines start anywhere), so it is an option, not the default.

Series may be NaN-padded past their end (as :mod:`contrastkit.data.series` pads unequal lengths):
NaN values are read as 0, and padded timesteps (NaN in every channel) are left out of the pooling.
Each encoder also keeps the padding from reaching the observed part, so the representation of a
series padded with NaN equals that of the series alone, exactly (in eval mode):

* ``ts2vec_cnn`` and ``resnet1d`` are non-causal convolutions, whose windows reach past a series'
  end. Zeroing the padded timesteps before every convolution makes them see what the zero
  "same" padding of the unpadded series shows them;
* ``series_transformer`` leaves the padded timesteps out of attention (a key padding mask);
* ``series_gru`` and ``series_lstm`` read left to right, so later padding cannot reach earlier
  timesteps.

``timestep_mask`` (B, T) bool hides the False timesteps from the encoder: TS2Vec's timestamp
masking, which sets their latent vectors after the input projection to 0 (``ts2vec_cnn``), or
their input values to 0 (the other encoders).

Registered backbones (``create_backbone(name, in_channels=C)``): ``ts2vec_cnn`` (Yue et al., 2022),
``resnet1d`` (Wang et al., 2017), ``series_transformer``, ``series_gru``, ``series_lstm``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit._checks import check_ndim
from contrastkit.errors import ConfigError, InputError
from contrastkit.models.backbones import register_backbone


class SeriesEncoder(nn.Module):
    """Base of the series encoders: NaN handling, timestep masks and max pooling.

    Subclasses set ``feature_dim`` and implement ``_encode(x, observed, timestep_mask)``, which gets
    x with NaN read as 0 and returns (B, T, feature_dim).
    """

    feature_dim: int

    def _encode(self, x: Tensor, observed: Tensor, timestep_mask: Tensor | None) -> Tensor:
        raise NotImplementedError

    def encode_timesteps(self, x: Tensor, timestep_mask: Tensor | None = None) -> Tensor:
        """Per-timestep representations (B, T, feature_dim) of series x (B, C, T)."""
        check_ndim("x", x, 3, "(B, C, T)")
        if not x.is_floating_point():
            raise InputError(f"x must be a floating-point series batch, got dtype {x.dtype}; convert with .float().")
        if timestep_mask is not None and timestep_mask.shape != (x.shape[0], x.shape[2]):
            raise InputError(f"timestep_mask must have shape (B, T) = {(x.shape[0], x.shape[2])}, got "
                             f"{tuple(timestep_mask.shape)}.")
        missing = torch.isnan(x)
        observed = ~missing.all(dim=1)
        return self._encode(x.masked_fill(missing, 0.0), observed, timestep_mask)

    def forward(self, x: Tensor) -> Tensor:
        """One vector (B, feature_dim) per series: the maximum over its observed timesteps
        (0 for a series with none)."""
        return pyramid_pool(self.encode_timesteps(x), observed_timesteps(x), levels=(1,))


def observed_timesteps(x: Tensor) -> Tensor:
    """(B, T) bool: the timesteps of series x (B, C, T) that are not NaN in every channel."""
    return ~torch.isnan(x).all(dim=1)


def pyramid_pool(timesteps: Tensor, observed: Tensor, levels: tuple[int, ...] = (1, 2, 4)) -> Tensor:
    """Max-pool per-timestep representations (B, T, D) over a temporal pyramid: for each ``n`` in
    ``levels``, the maximum over each of ``n`` equal consecutive segments of a series' observed
    span (up to its last observed timestep), concatenated level by level to (B, D * sum(levels)).

    Timesteps that are not ``observed`` (B, T) are left out; a segment with none gives 0. Level 1
    is the maximum over the whole series.

    Example:
        >>> timesteps = torch.tensor([[[1.0], [4.0], [2.0], [3.0]]])
        >>> pyramid_pool(timesteps, torch.ones(1, 4, dtype=torch.bool), levels=(1, 2, 4))
        tensor([[4., 4., 3., 1., 4., 2., 3.]])
    """
    check_ndim("timesteps", timesteps, 3, "(B, T, D)")
    if observed.shape != timesteps.shape[:2]:
        raise InputError(f"observed must have shape (B, T) = {tuple(timesteps.shape[:2])}, got "
                         f"{tuple(observed.shape)}.")
    if not levels or any(not isinstance(n, int) or n < 1 for n in levels):
        raise ConfigError(f"levels must be positive whole numbers of segments, got {levels!r}.")
    positions = torch.arange(timesteps.shape[1], device=timesteps.device)
    # The observed span of each series: up to its last observed timestep (NaN padding lies after it).
    span = torch.where(observed, positions + 1, 0).amax(dim=1, keepdim=True).clamp(min=1)
    pooled = []
    for n in levels:
        segment = positions * n // span  # (B, T): each timestep's segment, >= n past the span
        for index in range(n):
            inside = observed & (segment == index)
            maximum = timesteps.masked_fill(~inside[:, :, None], -math.inf).amax(dim=1)
            pooled.append(maximum.masked_fill(~inside.any(dim=1, keepdim=True), 0.0))
    return torch.cat(pooled, dim=1)


class PyramidPooling(nn.Module):
    """A series encoder whose ``forward`` pools a temporal pyramid (:func:`pyramid_pool`), so the
    vector keeps where in the series each feature is strongest; ``encode_timesteps`` is the
    wrapped encoder's, so a method that trains on timesteps (TS2Vec) trains it unchanged.

    Example:
        >>> encoder = PyramidPooling(TS2VecEncoder(in_channels=1, hidden_dim=8, output_dim=16, depth=2))
        >>> encoder(torch.randn(4, 1, 30)).shape, encoder.feature_dim
        (torch.Size([4, 112]), 112)
    """

    def __init__(self, encoder: nn.Module, levels: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.encoder = encoder
        self.levels = tuple(levels)
        self.feature_dim = encoder.feature_dim * sum(self.levels)

    def encode_timesteps(self, x: Tensor, timestep_mask: Tensor | None = None) -> Tensor:
        return self.encoder.encode_timesteps(x, timestep_mask)

    def forward(self, x: Tensor) -> Tensor:
        return pyramid_pool(self.encode_timesteps(x), observed_timesteps(x), self.levels)


SERIES_POOLINGS = ("max", "pyramid")


def pooled(encoder: nn.Module, pooling: str) -> nn.Module:
    """``encoder`` with the pooling a config names: ``max`` (its own) or ``pyramid``."""
    if pooling not in SERIES_POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(SERIES_POOLINGS)}, got {pooling!r}.")
    return PyramidPooling(encoder) if pooling == "pyramid" else encoder


def _hide(values: Tensor, keep: Tensor | None) -> Tensor:
    """(B, C, T) values with the timesteps where ``keep`` (B, T) is False set to 0."""
    return values if keep is None else values * keep[:, None, :].to(values.dtype)


class _DilatedBlock(nn.Module):
    """Two GELU-preceded dilated convolutions ("same" length) with a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, project: bool) -> None:
        super().__init__()
        padding = (kernel_size - 1) * dilation // 2
        self.first = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
        self.second = nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
        self.shortcut = nn.Conv1d(in_channels, out_channels, 1) if project else nn.Identity()

    def forward(self, x: Tensor, observed: Tensor) -> Tensor:
        hidden = self.first(_hide(F.gelu(x), observed))
        hidden = self.second(_hide(F.gelu(hidden), observed))
        return hidden + self.shortcut(x)


class TS2VecEncoder(SeriesEncoder):
    """TS2Vec's encoder (Yue et al., AAAI 2022): a linear input projection to ``hidden_dim``, then
    ``depth`` residual blocks of dilated convolutions (dilation 2^i in block i, kernel 3) and one
    more block to ``output_dim``, with dropout on the representation while training.

    The receptive field doubles with every block (2^(depth+2) - 1 timesteps after 11 blocks), so
    every timestep sees most of a series of the archives' lengths.

    Example:
        >>> encoder = TS2VecEncoder(in_channels=2, hidden_dim=8, output_dim=16, depth=2)
        >>> encoder(torch.randn(4, 2, 30)).shape, encoder.encode_timesteps(torch.randn(4, 2, 30)).shape
        (torch.Size([4, 16]), torch.Size([4, 30, 16]))
    """

    def __init__(self, in_channels: int = 1, hidden_dim: int = 64, output_dim: int = 320, depth: int = 10,
                 kernel_size: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd so the output keeps the input's length, got {kernel_size}.")
        self.input_projection = nn.Linear(in_channels, hidden_dim)
        blocks, previous = [], hidden_dim
        for index, width in enumerate([hidden_dim] * depth + [output_dim]):
            blocks.append(_DilatedBlock(previous, width, kernel_size, dilation=2 ** index, project=previous != width))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = output_dim

    def _encode(self, x: Tensor, observed: Tensor, timestep_mask: Tensor | None) -> Tensor:
        hidden = self.input_projection(x.transpose(1, 2)).transpose(1, 2)  # (B, hidden, T)
        keep = observed if timestep_mask is None else observed & timestep_mask.to(observed.device)
        hidden = _hide(hidden, keep)
        for block in self.blocks:
            hidden = block(hidden, observed)
        return self.dropout(hidden.transpose(1, 2))


class _ResidualBlock1d(nn.Module):
    """Wang et al.'s residual block: conv-BN-ReLU with kernels 8, 5, 3, plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, out_channels, kernel, bias=False)
                                   for channels, kernel in ((in_channels, 8), (out_channels, 5), (out_channels, 3)))
        self.norms = nn.ModuleList(nn.BatchNorm1d(out_channels) for _ in range(3))
        self.shortcut_conv = nn.Conv1d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels \
            else nn.Identity()
        self.shortcut_norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, observed: Tensor) -> Tensor:
        hidden = x
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # "Same" length; kernel 8's odd extra padding goes on the right, as torch's padding="same".
            kernel = conv.kernel_size[0]
            hidden = norm(conv(F.pad(_hide(hidden, observed), ((kernel - 1) // 2, kernel // 2))))
            if index < 2:
                hidden = F.relu(hidden)
        return F.relu(hidden + self.shortcut_norm(self.shortcut_conv(x)))


class ResNet1d(SeriesEncoder):
    """Wang et al. (2017)'s ResNet baseline for series classification: three residual blocks of
    ``widths`` channels, each three convolutions with kernels 8, 5 and 3.

    Example:
        >>> ResNet1d(in_channels=3, widths=(8, 16, 16))(torch.randn(2, 3, 40)).shape
        torch.Size([2, 16])
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (64, 128, 128)) -> None:
        super().__init__()
        channels = [in_channels, *widths]
        self.blocks = nn.ModuleList(_ResidualBlock1d(channels[i], channels[i + 1]) for i in range(len(widths)))
        self.feature_dim = widths[-1]

    def _encode(self, x: Tensor, observed: Tensor, timestep_mask: Tensor | None) -> Tensor:
        hidden = _hide(x, timestep_mask)
        for block in self.blocks:
            hidden = block(hidden, observed)
        return hidden.transpose(1, 2)


def _sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    """Vaswani et al.'s positional encoding (length, dim): sines and cosines of geometric frequencies."""
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[:dim // 2])
    return table


class SeriesTransformer(SeriesEncoder):
    """A small Transformer encoder over timesteps: linear input projection, positions added
    (``"sinusoidal"``, any length, or ``"learned"``, up to ``max_length``), pre-norm layers whose
    attention skips padded timesteps.

    Example:
        >>> SeriesTransformer(in_channels=2, dim=16, heads=2, layers=1)(torch.randn(3, 2, 10)).shape
        torch.Size([3, 16])
    """

    def __init__(self, in_channels: int = 1, dim: int = 64, heads: int = 4, layers: int = 2,
                 positions: str = "sinusoidal", max_length: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ConfigError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}.")
        if dim % heads:
            raise ConfigError(f"dim ({dim}) must be divisible by heads ({heads}).")
        self.input_projection = nn.Linear(in_channels, dim)
        self.learned_positions = nn.Parameter(torch.zeros(max_length, dim)) if positions == "learned" else None
        if self.learned_positions is not None:
            nn.init.normal_(self.learned_positions, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # Nested tensors (a fast path for padded batches in eval mode) would return zeros at padded
        # timesteps instead of values; keeping dense tensors makes train and eval agree.
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.max_length = max_length
        self.feature_dim = dim

    def _encode(self, x: Tensor, observed: Tensor, timestep_mask: Tensor | None) -> Tensor:
        length = x.shape[2]
        hidden = self.input_projection(_hide(x, timestep_mask).transpose(1, 2))
        if self.learned_positions is None:
            hidden = hidden + _sinusoidal_positions(length, hidden.shape[2], x.device)
        elif length > self.max_length:
            raise InputError(f"series of length {length} exceed the learned positions' max_length {self.max_length}; "
                             "build the encoder with a larger max_length or positions='sinusoidal'.")
        else:
            hidden = hidden + self.learned_positions[:length]
        # A series with no observed timestep would attend to nothing (NaN); it attends to all instead.
        padding = ~observed & observed.any(dim=1, keepdim=True)
        return self.norm(self.layers(hidden, src_key_padding_mask=padding))


class SeriesRNN(SeriesEncoder):
    """A unidirectional GRU or LSTM over timesteps; its hidden state at each timestep is that
    timestep's representation.

    Example:
        >>> SeriesRNN("gru", in_channels=2, hidden_dim=16)(torch.randn(3, 2, 10)).shape
        torch.Size([3, 16])
    """

    def __init__(self, cell: str, in_channels: int = 1, hidden_dim: int = 128, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        cells = {"gru": nn.GRU, "lstm": nn.LSTM}
        if cell not in cells:
            raise ConfigError(f"cell must be 'gru' or 'lstm', got {cell!r}.")
        self.rnn = cells[cell](in_channels, hidden_dim, num_layers=layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        self.feature_dim = hidden_dim

    def _encode(self, x: Tensor, observed: Tensor, timestep_mask: Tensor | None) -> Tensor:
        outputs, _ = self.rnn(_hide(x, timestep_mask).transpose(1, 2))
        return outputs


@register_backbone("ts2vec_cnn")
def ts2vec_cnn(in_channels: int = 1, **kwargs) -> nn.Module:
    return TS2VecEncoder(in_channels=in_channels, **kwargs)


@register_backbone("resnet1d")
def resnet1d(in_channels: int = 1, cifar_stem: bool = False, **kwargs) -> nn.Module:
    # create_backbone hands cifar_stem to every name starting with "resnet".
    if cifar_stem:
        raise ConfigError("cifar_stem applies to the image ResNets, not to resnet1d; set cifar_stem=false.")
    return ResNet1d(in_channels=in_channels, **kwargs)


@register_backbone("series_transformer")
def series_transformer(in_channels: int = 1, **kwargs) -> nn.Module:
    return SeriesTransformer(in_channels=in_channels, **kwargs)


@register_backbone("series_gru")
def series_gru(in_channels: int = 1, **kwargs) -> nn.Module:
    return SeriesRNN("gru", in_channels=in_channels, **kwargs)


@register_backbone("series_lstm")
def series_lstm(in_channels: int = 1, **kwargs) -> nn.Module:
    return SeriesRNN("lstm", in_channels=in_channels, **kwargs)


def list_series_backbones() -> list[str]:
    """The registered backbones that encode series: those this module registers."""
    from contrastkit.models.backbones import BACKBONES

    return [name for name in BACKBONES.names() if BACKBONES.get(name).__module__ == __name__]
