"""Audio data: resampling, fixed length with a mask, folders, CSVs and FSDD's official split."""

import numpy as np
import pytest
import torch

from contrastkit.data.audio import fit_length, load_audio_folder, load_fsdd, read_audio, resample
from contrastkit.errors import ConfigError, DatasetError


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_resampling_keeps_a_tone_s_pitch_and_removes_what_lies_above_the_new_nyquist(tone):
    low = tone(440.0, 1.0, 16000)
    up = resample(low, 16000, 22050)
    assert len(up) == 22050 and abs(_peak_hz(up, 22050) - 440.0) < 2.0
    # 3 kHz lies below 8 kHz's Nyquist (4 kHz) and stays; 6 kHz lies above it and is filtered out.
    time = np.arange(16000) / 16000
    kept, removed = (resample(np.sin(2 * np.pi * hz * time).astype(np.float32), 16000, 8000) for hz in (3000, 6000))
    assert abs(_peak_hz(kept, 8000) - 3000.0) < 2.0
    # Away from the ends, where the filter meets the signal's edges.
    assert np.sqrt(np.mean(removed[400:-400] ** 2)) < 0.01 * np.sqrt(np.mean(kept[400:-400] ** 2))
    assert resample(low, 16000, 16000) is low
    with pytest.raises(ConfigError, match="sample rates must be positive"):
        resample(low, 0, 8000)


def test_fit_length_keeps_the_centre_or_pads_with_zeros():
    samples = np.arange(1, 11, dtype=np.float32)
    cut, observed = fit_length(samples, 4)
    assert cut.tolist() == [4, 5, 6, 7] and observed == 4
    padded, observed = fit_length(samples, 12)
    assert padded.tolist() == [*range(1, 11), 0, 0] and observed == 10


def test_a_folder_of_class_folders_loads_resampled_with_lengths_and_a_mask(tmp_path, corpus):
    root = corpus(tmp_path / "clips")
    splits = load_audio_folder(root, sample_rate=16000, seconds=0.4)
    assert splits.classes == ["high", "low"] and splits.sample_rate == 16000
    # Every fifth clip of each class is held out: 2 of 10.
    assert len(splits.train) == 16 and len(splits.test) == 4
    assert splits.train.waveforms.shape == (16, 1, 6400) and splits.train.waveforms.dtype == torch.float32
    mask = splits.train.mask
    assert torch.equal(mask.sum(dim=1), splits.train.lengths)
    assert (splits.train.waveforms[:, 0][~mask] == 0).all()
    assert splits.train.lengths.max() == 6400 and splits.train.lengths.min() == round(0.3 * 16000)
    assert (splits.train.speakers == -1).all()


def test_a_csv_names_labels_speakers_and_splits(tmp_path, corpus):
    corpus(tmp_path)
    rows = ["path,label,speaker,split"] + [f"{label}/{index:02d}.wav,{label},s{index % 2},"
                                           f"{'test' if index < 3 else 'train'}"
                                           for label in ("low", "high") for index in range(10)]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    splits = load_audio_folder(tmp_path / "clips.csv", seconds=0.5)
    assert len(splits.test) == 6 and splits.speaker_names == ["s0", "s1"] and splits.sample_rate == 8000
    assert sorted(splits.test.speakers.tolist()) == [0, 0, 0, 0, 1, 1]
    (tmp_path / "bad.csv").write_text("path,label\nlow/00.wav,low\n")
    with pytest.raises(DatasetError, match="missing speaker"):
        load_audio_folder(tmp_path / "bad.csv")
    (tmp_path / "split.csv").write_text("path,label,speaker,split\nlow/00.wav,low,a,dev\n")
    with pytest.raises(DatasetError, match="split must be train or test"):
        load_audio_folder(tmp_path / "split.csv")


def test_unreadable_and_missing_audio_say_what_to_give(tmp_path):
    (tmp_path / "x.wav").write_text("not audio")
    with pytest.raises(DatasetError, match="cannot read audio file"):
        read_audio(tmp_path / "x.wav")
    with pytest.raises(DatasetError, match="neither a folder"):
        load_audio_folder(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no Free Spoken Digit Dataset"):
        load_fsdd(tmp_path)


def test_fsdd_loads_its_official_split_with_digits_and_speakers(fsdd_root):
    splits = load_fsdd(fsdd_root)
    assert (len(splits.train), len(splits.test)) == (2700, 300)
    assert splits.classes == [str(digit) for digit in range(10)] and len(splits.speaker_names) == 6
    assert splits.sample_rate == 8000 and splits.train.waveforms.shape[1:] == (1, 8000)
    indices = {int(path.rsplit("_", 1)[1][:-4]) for path in splits.test.paths}
    assert indices == {0, 1, 2, 3, 4}
    assert torch.bincount(splits.test.labels).tolist() == [30] * 10
    assert torch.bincount(splits.test.speakers).tolist() == [50] * 6
