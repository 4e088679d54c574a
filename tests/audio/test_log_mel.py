"""The log-mel front end against a float64 NumPy reference written here from the definitions
(framing, periodic Hann window, |rFFT|^2, HTK triangular filters, log), and against librosa where it
is installed. torchaudio cannot be the reference: its last release (2.11.1) pins torch 2.11."""

import math

import numpy as np
import pytest
import torch

from contrastkit.models.audio import LogMel, mel_filterbank, mfcc, mfcc_statistics

RATE, N_FFT, WIN, HOP, N_MELS, F_MIN = 8000, 256, 200, 80, 40, 20.0


def reference_filters(rate, n_fft, n_mels, f_min, f_max):
    """Triangles between mel-spaced edges, each 1 at its centre frequency (HTK scale)."""
    to_mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    low, high = to_mel(f_min), to_mel(f_max)
    edges = [to_hz(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    filters = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            hz = k * rate / n_fft
            if left < hz <= centre:
                filters[m, k] = (hz - left) / (centre - left)
            elif centre < hz < right:
                filters[m, k] = (right - hz) / (right - centre)
    return filters


def reference_log_mel(samples):
    """Centred frames of the zero-padded clip, the Hann window in the middle of each FFT frame."""
    padded = np.concatenate([np.zeros(N_FFT // 2), samples.astype(np.float64), np.zeros(N_FFT // 2)])
    window = np.zeros(N_FFT)
    offset = (N_FFT - WIN) // 2
    window[offset:offset + WIN] = [0.5 - 0.5 * math.cos(2 * math.pi * n / WIN) for n in range(WIN)]
    frames = 1 + len(samples) // HOP
    power = np.stack([np.abs(np.fft.rfft(padded[i * HOP:i * HOP + N_FFT] * window)) ** 2 for i in range(frames)], 1)
    return np.log(reference_filters(RATE, N_FFT, N_MELS, F_MIN, RATE / 2) @ power + 1e-6)


def _speech_like(seconds=0.5, seed=0):
    """Harmonics of a gliding pitch with noise, and silence at the end (zero padding)."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    pitch = 120 + 60 * time
    voice = sum(np.sin(2 * np.pi * h * np.cumsum(pitch) / RATE) / h for h in range(1, 12))
    clip = 0.3 * voice + 0.01 * rng.normal(size=len(time))
    clip[-800:] = 0
    return clip.astype(np.float32)


def test_the_filterbank_matches_the_reference_triangles():
    ours = mel_filterbank(RATE, N_FFT, N_MELS, F_MIN, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, reference_filters(RATE, N_FFT, N_MELS, F_MIN, RATE / 2), atol=1e-12)


def test_log_mel_matches_the_float64_reference():
    clips = np.stack([_speech_like(seed=seed) for seed in range(3)])
    ours = LogMel(RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP, n_mels=N_MELS, f_min=F_MIN)(
        torch.from_numpy(clips)[:, None])
    assert ours.shape == (3, 1, N_MELS, 1 + clips.shape[1] // HOP) and ours.dtype == torch.float32
    for clip, log_mel in zip(clips, ours[:, 0].double().numpy()):
        reference = reference_log_mel(clip)
        loud = reference > math.log(1e-3)  # float32 rounding matters only near the floor
        np.testing.assert_allclose(log_mel[loud], reference[loud], atol=2e-4)
        np.testing.assert_allclose(log_mel, reference, atol=5e-2)


def test_the_defaults_at_8_khz_are_32_ms_ffts_of_25_ms_windows_every_10_ms():
    front = LogMel(RATE)
    assert (front.n_fft, front.win_length, front.hop_length, front.n_mels) == (N_FFT, WIN, HOP, N_MELS)


def test_mfccs_are_the_orthonormal_dct_of_the_log_mels():
    log_mel = torch.randn(2, 1, N_MELS, 5, dtype=torch.float64)
    n = np.arange(N_MELS)
    basis = np.stack([np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS)) for k in range(13)])
    basis *= np.sqrt(2 / N_MELS)
    basis[0] /= np.sqrt(2)
    np.testing.assert_allclose(mfcc(log_mel, 13).numpy(), basis @ log_mel[:, 0].numpy(), atol=1e-12)


def test_mfcc_statistics_leave_the_padding_out():
    clip = torch.from_numpy(_speech_like(seconds=0.4))
    short = mfcc_statistics(clip.view(1, 1, -1), torch.tensor([clip.shape[0]]), RATE)
    padded = torch.cat([clip, torch.zeros(1600)]).view(1, 1, -1)
    assert torch.allclose(mfcc_statistics(padded, torch.tensor([clip.shape[0]]), RATE), short, atol=1e-5)


def test_log_mel_matches_librosa_where_installed():
    librosa = pytest.importorskip("librosa", reason="librosa is not installed (an optional cross-check)")
    clip = _speech_like()
    power = librosa.feature.melspectrogram(y=clip.astype(np.float64), sr=RATE, n_fft=N_FFT, win_length=WIN,
                                           hop_length=HOP, n_mels=N_MELS, fmin=F_MIN, htk=True, norm=None,
                                           center=True, pad_mode="constant", power=2.0)
    ours = LogMel(RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP, n_mels=N_MELS, f_min=F_MIN)(
        torch.from_numpy(clip).view(1, 1, -1))[0, 0].double().numpy()
    loud = power > 1e-3
    np.testing.assert_allclose(ours[loud], np.log(power + 1e-6)[loud], atol=2e-4)
