"""Audio encoders and their log-mel front end: (B, 1, L) waveforms to one vector each.

* :class:`LogMel`: log mel power spectrogram on the batch's device, ``torch.stft`` (periodic Hann
  window, centred frames, zero padding at the ends) and a triangular mel filterbank on the HTK mel
  scale (``2595 log10(1 + f / 700)``, filters of peak 1, not area-normalised; librosa's
  ``htk=True, norm=None``), then ``log(mel + 1e-6)``.
* ``wave_cnn`` (:class:`WaveCNN`): a 1-D CNN on raw waveforms, strided convolutions with batch
  norm, mean and max over time concatenated.
* ``mel_cnn`` (:class:`MelCNN`): a 2-D CNN on log-mels (four conv-BN-ReLU blocks with pooling),
  mean and max over time of the frequency-averaged maps concatenated.
* ``ecapa`` (:class:`ECAPA`): an ECAPA-TDNN-style speaker encoder on log-mels (SE-Res2 blocks,
  attentive statistics pooling), small by default.
* ``hf:<name or folder>`` (:class:`HFAudioEncoder`): any Hugging Face audio model (wav2vec 2.0,
  HuBERT, WavLM), its last hidden states averaged over each clip's frames.

The log-mel encoders take waveforms (B, 1, L), which their ``frontend`` turns into log-mels, or
log-mels (B, 1, n_mels, frames) as they are, so views can be made on the spectrogram (SpecAugment,
:mod:`contrastkit.augment.audio`) while evaluation feeds the clips themselves.

Example:
    >>> encoder = create_backbone("mel_cnn", in_channels=1, sample_rate=8000)
    >>> encoder(torch.randn(2, 1, 8000)).shape == (2, encoder.feature_dim)
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastkit._checks import check_ndim
from contrastkit.augment.audio import observed_lengths
from contrastkit.errors import ConfigError, InputError
from contrastkit.models.backbones import create_backbone, register_backbone

AUDIO_BACKBONES = ("mel_cnn", "wave_cnn", "ecapa")
LOG_FLOOR = 1e-6


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1) on the HTK mel scale, each peaking at 1 at its
    centre, their edges and centres evenly spaced in mel from ``f_min`` to ``f_max`` (default:
    Nyquist).

    Args:
        sample_rate: the clips' sample rate in Hz.
        n_fft: the FFT size.
        n_mels: the number of filters.
        f_min: the lowest edge in Hz.
        f_max: the highest edge in Hz.
        dtype: the filters' dtype.

    Example:
        >>> mel_filterbank(8000, 256, 40).shape
        torch.Size([40, 129])
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(f"the mel filterbank needs 0 <= f_min < f_max <= {sample_rate / 2} (Nyquist), got "
                          f"f_min={f_min}, f_max={f_max}.")
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                                     float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64))), n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(dtype)


class LogMel(nn.Module):
    """Waveforms (B, 1, L) to log mel power spectrograms (B, 1, n_mels, L // hop_length + 1).

    Args:
        sample_rate: the clips' rate in Hz.
        n_fft: FFT size (default: 32 ms).
        win_length: Hann window length (default: 25 ms).
        hop_length: frame step (default: 10 ms).
        n_mels: mel filters.
        f_min: the lowest filter edge in Hz.

    Example:
        >>> LogMel(8000)(torch.zeros(2, 1, 8000)).shape
        torch.Size([2, 1, 40, 101])
    """

    def __init__(self, sample_rate: int, n_fft: int | None = None, win_length: int | None = None,
                 hop_length: int | None = None, n_mels: int = 40, f_min: float = 20.0) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft or 2 ** math.ceil(math.log2(0.032 * sample_rate))
        self.win_length = win_length or round(0.025 * sample_rate)
        self.hop_length = hop_length or round(0.010 * sample_rate)
        self.n_mels = n_mels
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length ({self.win_length}) cannot exceed n_fft ({self.n_fft}).")
        # Buffers: they follow the module to the batch's device and are not trained.
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        self.register_buffer("filters", mel_filterbank(sample_rate, self.n_fft, n_mels, f_min), persistent=False)

    def power(self, x: Tensor) -> Tensor:
        """Mel power spectrogram (B, n_mels, frames) of waveforms (B, 1, L)."""
        check_ndim("waveforms", x, 3, "(B, 1, L)")
        spectrum = torch.stft(x[:, 0].float(), self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                              window=self.window, center=True, pad_mode="constant", return_complex=True)
        return torch.matmul(self.filters, spectrum.abs() ** 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(self.power(x) + LOG_FLOOR).unsqueeze(1)


def mfcc(log_mel: Tensor, n_mfcc: int = 20) -> Tensor:
    """MFCCs (B, n_mfcc, frames) of log-mels (B, 1, n_mels, frames): their orthonormal DCT-II along
    the mel axis, first ``n_mfcc`` coefficients.

    Example:
        >>> mfcc(torch.zeros(2, 1, 40, 7)).shape
        torch.Size([2, 20, 7])
    """
    n_mels = log_mel.shape[2]
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    n = torch.arange(n_mels, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return torch.matmul(basis.to(log_mel), log_mel[:, 0])


class _AudioEncoder(nn.Module):
    """Base: a log-mel front end (or none) before ``body``, which gives (B, feature_dim)."""

    feature_dim: int
    frontend: LogMel | None

    def body(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.frontend is not None and x.ndim == 3:
            x = self.frontend(x)
        return self.body(x)


def _pool_time(maps: Tensor) -> Tensor:
    """Mean and max over the last (time) axis, concatenated."""
    return torch.cat([maps.mean(dim=-1), maps.amax(dim=-1)], dim=1)


class WaveCNN(_AudioEncoder):
    """1-D CNN on waveforms (B, 1, L): a strided first convolution (a learned filterbank of
    ``width`` filters, 25 ms windows every 5 ms), then blocks of conv-BN-ReLU with max pooling,
    doubling the channels every other block; features are the mean and max over time (2 * last width).

    Args:
        in_channels: 1 (mono).
        sample_rate: the clips' rate in Hz, which sets the first layer's window and stride.
        width: the first layer's channels.
        blocks: further conv blocks.
    """

    def __init__(self, in_channels: int = 1, sample_rate: int = 16000, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.frontend = None
        window, stride = round(0.025 * sample_rate), round(0.005 * sample_rate)
        layers: list[nn.Module] = [nn.Conv1d(in_channels, width, window, stride=stride, padding=window // 2,
                                             bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        channels = width
        for block in range(blocks):
            out = min(channels * 2, 256) if block % 2 == 0 else channels
            layers += [nn.Conv1d(channels, out, 3, padding=1, bias=False), nn.BatchNorm1d(out), nn.ReLU(inplace=True),
                       nn.MaxPool1d(2)]
            channels = out
        self.net = nn.Sequential(*layers)
        self.feature_dim = 2 * channels

    def body(self, x: Tensor) -> Tensor:
        check_ndim("waveforms", x, 3, "(B, 1, L)")
        return _pool_time(self.net(x))


class MelCNN(_AudioEncoder):
    """2-D CNN on log-mels: per-clip standardisation of the spectrogram (so gain does not shift the
    input), four conv-BN-ReLU blocks (``width`` to 8 * ``width`` channels) with 2 x 2 pooling after
    the first three, the frequency axis averaged, then mean and max over time (16 * ``width``).

    Args:
        in_channels: 1.
        sample_rate: the clips' rate in Hz, for the log-mel front end.
        width: the first block's channels.
        n_mels: mel filters of the front end.
    """

    def __init__(self, in_channels: int = 1, sample_rate: int = 16000, width: int = 16, n_mels: int = 40) -> None:
        super().__init__()
        if in_channels != 1:
            raise ConfigError(f"mel_cnn takes mono clips (in_channels=1), got in_channels={in_channels}.")
        self.frontend = LogMel(sample_rate, n_mels=n_mels)
        layers: list[nn.Module] = []
        channels = 1
        for block, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if block < 3:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.net = nn.Sequential(*layers)
        self.feature_dim = 2 * channels

    def body(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"mel_cnn takes waveforms (B, 1, L) or log-mels (B, 1, n_mels, frames), got shape "
                             f"{tuple(x.shape)}.")
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp(min=1e-5)
        return _pool_time(self.net((x - mean) / std).mean(dim=2))


class _SERes2Block(nn.Module):
    """ECAPA-TDNN's block: a 1x1 convolution, a Res2Net dilated convolution (the channels split into
    ``scale`` groups, each group's convolution also fed the previous group's output), a 1x1
    convolution, squeeze-excitation, and a residual connection."""

    def __init__(self, channels: int, dilation: int, scale: int = 4, squeeze: int = 64) -> None:
        super().__init__()
        if channels % scale:
            raise ConfigError(f"ecapa channels ({channels}) must be a multiple of scale ({scale}).")
        width = channels // scale

        def unit(in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel, dilation=dilation,
                                           padding=dilation * (kernel - 1) // 2), nn.ReLU(inplace=True),
                                 nn.BatchNorm1d(out_channels))

        self.enter = unit(channels, channels)
        self.groups = nn.ModuleList(unit(width, width, 3, dilation) for _ in range(scale - 1))
        self.leave = unit(channels, channels)
        self.excite = nn.Sequential(nn.Linear(channels, squeeze), nn.ReLU(inplace=True), nn.Linear(squeeze, channels),
                                    nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        parts = self.enter(x).chunk(len(self.groups) + 1, dim=1)
        outputs, previous = [parts[0]], None
        for part, group in zip(parts[1:], self.groups):
            previous = group(part if previous is None else part + previous)
            outputs.append(previous)
        y = self.leave(torch.cat(outputs, dim=1))
        return x + y * self.excite(y.mean(dim=2))[:, :, None]


class AttentiveStatistics(nn.Module):
    """Attentive statistics pooling: per channel, attention weights over time (from the frames and
    the utterance's mean and standard deviation), then the weighted mean and standard deviation."""

    def __init__(self, channels: int, attention: int = 128) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(3 * channels, attention, 1), nn.ReLU(inplace=True),
                                       nn.BatchNorm1d(attention), nn.Tanh(), nn.Conv1d(attention, channels, 1))

    @staticmethod
    def _statistics(x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        mean = (weights * x).sum(dim=2)
        variance = (weights * (x - mean[:, :, None]) ** 2).sum(dim=2)
        return mean, variance.clamp(min=1e-6).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        uniform = torch.full_like(x[:, :1], 1.0 / x.shape[2])
        mean, std = self._statistics(x, uniform)
        context = torch.cat([x, mean[:, :, None].expand_as(x), std[:, :, None].expand_as(x)], dim=1)
        mean, std = self._statistics(x, torch.softmax(self.attention(context), dim=2))
        return torch.cat([mean, std], dim=1)


class ECAPA(_AudioEncoder):
    """An ECAPA-TDNN-style speaker encoder on log-mels (Desplanques et al., 2020), small by default:
    a 1-D convolution over the mel bins as channels, three SE-Res2 blocks (dilations 2, 3, 4) whose
    outputs are concatenated and fused by a 1x1 convolution, attentive statistics pooling, and a
    linear embedding of ``embedding_dim`` (the features).

    Args:
        in_channels: 1.
        sample_rate: the clips' rate in Hz, for the log-mel front end.
        channels: the blocks' width (the paper's 512 or 1024; 128 here, for CPUs).
        embedding_dim: the embedding's width.
        n_mels: mel filters of the front end.
    """

    def __init__(self, in_channels: int = 1, sample_rate: int = 16000, channels: int = 128, embedding_dim: int = 192,
                 n_mels: int = 40) -> None:
        super().__init__()
        if in_channels != 1:
            raise ConfigError(f"ecapa takes mono clips (in_channels=1), got in_channels={in_channels}.")
        self.frontend = LogMel(sample_rate, n_mels=n_mels)
        self.enter = nn.Sequential(nn.Conv1d(n_mels, channels, 5, padding=2), nn.ReLU(inplace=True),
                                   nn.BatchNorm1d(channels))
        self.blocks = nn.ModuleList(_SERes2Block(channels, dilation) for dilation in (2, 3, 4))
        self.fuse = nn.Sequential(nn.Conv1d(3 * channels, 3 * channels, 1), nn.ReLU(inplace=True))
        self.pool = AttentiveStatistics(3 * channels)
        self.embed = nn.Sequential(nn.BatchNorm1d(6 * channels), nn.Linear(6 * channels, embedding_dim))
        self.feature_dim = embedding_dim

    def body(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"ecapa takes waveforms (B, 1, L) or log-mels (B, 1, n_mels, frames), got shape "
                             f"{tuple(x.shape)}.")
        # Mean normalisation over time per mel bin (the recipes' sentence-level CMN).
        x = x[:, 0] - x[:, 0].mean(dim=2, keepdim=True)
        h = self.enter(x)
        outputs = []
        for block in self.blocks:
            h = block(h)
            outputs.append(h)
        return self.embed(self.pool(self.fuse(torch.cat(outputs, dim=1))))


@register_backbone("wave_cnn")
def wave_cnn(in_channels: int = 1, **kwargs) -> nn.Module:
    return WaveCNN(in_channels=in_channels, **kwargs)


@register_backbone("mel_cnn")
def mel_cnn(in_channels: int = 1, **kwargs) -> nn.Module:
    return MelCNN(in_channels=in_channels, **kwargs)


@register_backbone("ecapa")
def ecapa(in_channels: int = 1, **kwargs) -> nn.Module:
    return ECAPA(in_channels=in_channels, **kwargs)


class HFAudioEncoder(nn.Module):
    """A Hugging Face audio model (``AutoModel``: wav2vec 2.0, HuBERT, WavLM) on (B, 1, L) waveforms:
    each clip normalised over its observed samples as the model's feature extractor does, and the
    last hidden states averaged over the frames those samples cover (zero padding is not speech).

    Args:
        name: a hub id (``facebook/wav2vec2-base``) or a local folder holding the model and its
            feature extractor (``save_pretrained``).
        sample_rate: the clips' rate, which must be the one the model was trained at.
    """

    frontend = None

    def __init__(self, name: str, sample_rate: int) -> None:
        super().__init__()
        try:
            from transformers import AutoFeatureExtractor, AutoModel
        except ImportError:
            raise ConfigError("hf: audio encoders need transformers: pip install transformers") from None
        try:
            extractor = AutoFeatureExtractor.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot load the Hugging Face audio model {name!r} ({str(error).splitlines()[0]}); "
                              "give a hub id that is reachable or cached, or a folder saved with save_pretrained.") \
                from None
        rate = getattr(extractor, "sampling_rate", None)
        if rate is not None and rate != sample_rate:
            raise ConfigError(f"{name} was trained on {rate} Hz audio but the clips are at {sample_rate} Hz; set "
                              f"audio.sample_rate={rate}.")
        self.normalise = bool(getattr(extractor, "do_normalize", True))
        self.feature_dim = int(self.model.config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        check_ndim("audio", x, 3, "(B, 1, L) waveforms")
        samples = x[:, 0]
        lengths = observed_lengths(x).clamp(min=1)
        inside = torch.arange(samples.shape[1], device=x.device)[None, :] < lengths[:, None]
        if self.normalise:
            count = lengths[:, None].to(samples.dtype)
            mean = (samples * inside).sum(dim=1, keepdim=True) / count
            variance = (((samples - mean) * inside) ** 2).sum(dim=1, keepdim=True) / count
            samples = torch.where(inside, (samples - mean) / torch.sqrt(variance + 1e-7), torch.zeros_like(samples))
        hidden = self.model(samples).last_hidden_state
        frames = self.model._get_feat_extract_output_lengths(lengths).clamp(1, hidden.shape[1])
        keep = (torch.arange(hidden.shape[1], device=x.device)[None, :] < frames[:, None]).to(hidden.dtype)
        return (hidden * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True)


def create_audio_backbone(name: str, sample_rate: int) -> nn.Module:
    """The registered audio encoder ``name`` (or ``hf:<model>``) for clips at ``sample_rate`` Hz.

    Example:
        >>> create_audio_backbone("wave_cnn", 8000).feature_dim
        256
    """
    if name.startswith("hf:"):
        return HFAudioEncoder(name[len("hf:"):], sample_rate)
    if name not in AUDIO_BACKBONES:
        raise ConfigError(f"audio clips need an audio encoder ({', '.join(AUDIO_BACKBONES)}, or hf:<a Hugging Face "
                          f"audio model>), not {name!r}.")
    return create_backbone(name, in_channels=1, sample_rate=sample_rate)


def mfcc_statistics(waveforms: Tensor, lengths: Tensor, sample_rate: int, *, n_mfcc: int = 20,
                    batch_size: int = 256) -> Tensor:
    """The raw-input baseline of audio: the mean and standard deviation over each clip's observed
    frames of its 20 MFCCs (of :class:`LogMel`'s 40 log-mels), (N, 2 * n_mfcc) float32 on the CPU.

    Args:
        waveforms: (N, 1, L) zero-padded clips.
        lengths: (N,) observed lengths in samples.
        sample_rate: their rate in Hz.
        n_mfcc: coefficients kept.
        batch_size: clips per batch (bounds memory).

    Example:
        >>> mfcc_statistics(torch.randn(3, 1, 800), torch.tensor([800, 400, 100]), 8000).shape
        torch.Size([3, 40])
    """
    frontend = LogMel(sample_rate).to(waveforms.device)
    rows = []
    for start in range(0, len(waveforms), batch_size):
        coefficients = mfcc(frontend(waveforms[start:start + batch_size]), n_mfcc)
        frames = lengths[start:start + batch_size].to(waveforms.device) // frontend.hop_length + 1
        observed = (torch.arange(coefficients.shape[-1], device=waveforms.device)[None, :] < frames[:, None])[:, None]
        count = observed.sum(dim=2)
        mean = (coefficients * observed).sum(dim=2) / count
        variance = (((coefficients - mean[..., None]) * observed) ** 2).sum(dim=2) / count
        rows.append(torch.cat([mean, variance.sqrt()], dim=1).float().cpu())
    return torch.cat(rows)
