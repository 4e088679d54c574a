"""Audio clips as a modality's data: WAV/FLAC files read with soundfile, mixed to mono, resampled
and cut or zero-padded to one length, held as one float tensor with each clip's observed length.

Sources:

* a folder of class folders (``ROOT/<label>/*.wav``), split into ``ROOT/train`` and ``ROOT/test``
  where those exist, else every fifth file of each class (sorted by name) held out for testing;
* a CSV file with columns ``path,label,speaker[,split]`` (paths relative to the CSV's folder;
  without ``split``, every fifth clip of each label held out);
* ``fsdd``, the Free Spoken Digit Dataset (``DATA_ROOT/fsdd/recordings/{digit}_{speaker}_{index}.wav``,
  8 kHz): labels are the digits, speakers kept beside them; its official test split is
  recordings 0 to 4 of each speaker and digit (300 clips), the other 2,700 train.

Resampling is polyphase filtering with a Kaiser-windowed sinc low-pass (``scipy.signal.resample_poly``,
its default beta of 5), done once when the clips are loaded. Clips longer than the fixed length keep
their centre (spoken words are trimmed to the speech, so the centre holds it); shorter ones are
zero-padded at the end, and :attr:`AudioSet.mask` marks the samples that are audio.

Example:
    >>> splits = load_fsdd("../shared/data")  # doctest: +SKIP
    >>> splits.train.waveforms.shape, splits.test.speaker_names[:2]  # doctest: +SKIP
    (torch.Size([2700, 1, 8000]), ['george', 'jackson'])
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.datasets import default_data_root
from contrastkit.errors import ConfigError, DatasetError

AUDIO_SUFFIXES = (".wav", ".flac")
# Every fifth clip of a class is held out where the data names no split.
HOLD_OUT_EVERY = 5


@dataclass
class AudioSet:
    """One split: zero-padded mono waveforms (N, 1, L) float32, each clip's observed length (N,),
    class ids (N,) and speaker ids (N,), -1 where unknown."""

    waveforms: Tensor
    lengths: Tensor
    labels: Tensor
    speakers: Tensor
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def mask(self) -> Tensor:
        """bool (N, L): True at the samples that are audio, False at the padding."""
        return torch.arange(self.waveforms.shape[-1])[None, :] < self.lengths[:, None]


@dataclass
class AudioSplits:
    """Train and test clips of one sample rate; ``classes`` and ``speaker_names`` name the ids."""

    train: AudioSet
    test: AudioSet
    classes: list[str]
    speaker_names: list[str]
    sample_rate: int


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples as mono float32 (channels averaged) and its sample rate.

    Args:
        path: a WAV or FLAC file (anything libsndfile reads).
    """
    try:
        import soundfile
    except ImportError:
        raise DatasetError("reading audio needs the soundfile package: pip install soundfile") from None
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise DatasetError(f"cannot read audio file {path}: {error}; give a WAV or FLAC file.") from None
    return samples.mean(axis=1), int(rate)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """``samples`` at ``rate`` resampled to ``target_rate`` by polyphase filtering with a
    Kaiser-windowed sinc low-pass (``scipy.signal.resample_poly``); unchanged where the rates agree.

    Args:
        samples: 1-D float samples.
        rate: their sample rate in Hz.
        target_rate: the sample rate wanted, in Hz.

    Example:
        >>> resample(np.zeros(8000, dtype=np.float32), 8000, 16000).shape
        (16000,)
    """
    if rate <= 0 or target_rate <= 0:
        raise ConfigError(f"sample rates must be positive, got {rate} and {target_rate}.")
    if rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    divisor = math.gcd(rate, target_rate)
    return resample_poly(samples, target_rate // divisor, rate // divisor).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """``samples`` cut to their centre ``length`` or zero-padded at the end to it, and how many
    of the result are audio.

    Args:
        samples: 1-D float samples.
        length: the fixed length, in samples.

    Example:
        >>> fit_length(np.ones(3, dtype=np.float32), 5)
        (array([1., 1., 1., 0., 0.], dtype=float32), 3)
    """
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start:start + length], length
    return np.pad(samples, (0, length - len(samples))), len(samples)


def _load_clips(paths: list[Path], sample_rate: int | None, seconds: float) -> tuple[Tensor, Tensor, int]:
    """The clips at ``paths`` as (N, 1, L) waveforms and lengths, resampled to ``sample_rate`` (None:
    the first file's rate)."""
    if seconds <= 0:
        raise ConfigError(f"audio.seconds must be > 0, got {seconds}.")
    clips, lengths = [], []
    for path in paths:
        samples, rate = read_audio(path)
        sample_rate = sample_rate or rate
        fitted, observed = fit_length(resample(samples, rate, sample_rate), round(seconds * sample_rate))
        clips.append(fitted)
        lengths.append(observed)
    waveforms = torch.from_numpy(np.stack(clips)).unsqueeze(1)
    return waveforms, torch.tensor(lengths, dtype=torch.long), sample_rate


@dataclass
class _Entry:
    path: Path
    label: str
    speaker: str | None
    test: bool


def _ids(names: list[str]) -> tuple[dict[str, int], list[str]]:
    ordered = sorted(set(names))
    return {name: index for index, name in enumerate(ordered)}, ordered


def _splits(entries: list[_Entry], sample_rate: int | None, seconds: float) -> AudioSplits:
    label_ids, classes = _ids([entry.label for entry in entries])
    speaker_ids, speakers = _ids([entry.speaker for entry in entries if entry.speaker is not None])
    waveforms, lengths, rate = _load_clips([entry.path for entry in entries], sample_rate, seconds)
    labels = torch.tensor([label_ids[entry.label] for entry in entries])
    speaker = torch.tensor([speaker_ids.get(entry.speaker, -1) for entry in entries])
    test = torch.tensor([entry.test for entry in entries])
    if test.all() or not test.any():
        raise DatasetError(f"the audio data has {'no train' if test.all() else 'no test'} clips; give both splits.")

    def part(rows: Tensor) -> AudioSet:
        index = rows.nonzero().squeeze(1)
        return AudioSet(waveforms[index], lengths[index], labels[index], speaker[index],
                        [str(entries[i].path) for i in index.tolist()])

    return AudioSplits(part(~test), part(test), classes, speakers, rate)


def _held_out(entries: list[tuple[Path, str, str | None]]) -> list[_Entry]:
    """Every HOLD_OUT_EVERY-th clip of each label (in the given order) marked for testing."""
    seen: dict[str, int] = {}
    marked = []
    for path, label, speaker in entries:
        count = seen.get(label, 0)
        seen[label] = count + 1
        marked.append(_Entry(path, label, speaker, count % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1))
    return marked


def load_audio_folder(root: str | Path, *, sample_rate: int | None = None, seconds: float = 1.0) -> AudioSplits:
    """Clips of a folder of class folders (``ROOT/train/<label>/``, ``ROOT/test/<label>/`` where
    those exist, else ``ROOT/<label>/`` with every fifth file of a class held out) or of a CSV file
    (``path,label,speaker[,split]``, ``split`` being ``train`` or ``test``).

    Args:
        root: the folder or the CSV file.
        sample_rate: the rate clips are resampled to; None keeps the first file's.
        seconds: the fixed length clips are cut or padded to.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _splits(_csv_entries(root), sample_rate, seconds)
    if not root.is_dir():
        raise DatasetError(f"{root} is neither a folder of class folders of audio files nor a CSV file.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        entries = [_Entry(path, label, None, split == "test") for split in ("train", "test")
                   for path, label in _class_files(root / split)]
    else:
        entries = _held_out([(path, label, None) for path, label in _class_files(root)])
    return _splits(entries, sample_rate, seconds)


def _class_files(root: Path) -> list[tuple[Path, str]]:
    files = [(path, folder.name) for folder in sorted(root.iterdir()) if folder.is_dir()
             for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise DatasetError(f"{root} holds no class folders of {' or '.join(AUDIO_SUFFIXES)} files.")
    return files


def _csv_entries(path: Path) -> list[_Entry]:
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    missing = {"path", "label", "speaker"} - set(rows[0] if rows else {})
    if missing:
        raise DatasetError(f"{path} needs the columns path,label,speaker[,split]; missing "
                           f"{', '.join(sorted(missing))}.")
    if "split" not in rows[0]:
        return _held_out([(path.parent / row["path"], row["label"], row["speaker"] or None) for row in rows])
    entries = []
    for number, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test"):
            raise DatasetError(f"{path} line {number}: split must be train or test, got {row['split']!r}.")
        entries.append(_Entry(path.parent / row["path"], row["label"], row["speaker"] or None, row["split"] == "test"))
    return entries


def fsdd_folder(data_root: str | Path | None) -> Path:
    """The folder of FSDD's WAVs: ``DATA_ROOT/fsdd/recordings`` (or ``DATA_ROOT/recordings``, or
    ``DATA_ROOT`` itself), DATA_ROOT defaulting to $CONTRASTKIT_DATA or ~/.cache/contrastkit."""
    root = Path(data_root) if data_root is not None else default_data_root()
    for folder in (root / "fsdd" / "recordings", root / "recordings", root):
        if folder.is_dir() and next(folder.glob("*_*_*.wav"), None) is not None:
            return folder
    raise DatasetError(f"no Free Spoken Digit Dataset under {root}: give data_root= the folder holding "
                       "fsdd/recordings/*.wav (git clone https://github.com/Jakobovski/free-spoken-digit-dataset).")


def load_fsdd(data_root: str | Path | None = None, *, sample_rate: int | None = None,
              seconds: float = 1.0) -> AudioSplits:
    """The Free Spoken Digit Dataset: labels are the digits, speakers kept; recordings 0-4 of each
    speaker and digit are the test split, as its README says.

    Args:
        data_root: the folder holding ``fsdd/recordings`` (see :func:`fsdd_folder`).
        sample_rate: the rate clips are resampled to; None keeps FSDD's 8 kHz.
        seconds: the fixed length clips are cut or padded to (1 s holds 99 % of them whole).
    """
    entries = []
    for path in sorted(fsdd_folder(data_root).glob("*_*_*.wav")):
        digit, speaker, index = path.stem.split("_", 2)
        entries.append(_Entry(path, digit, speaker, int(index) < 5))
    return _splits(entries, sample_rate, seconds)
