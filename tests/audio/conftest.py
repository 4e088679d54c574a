"""Helpers of the audio tests: tiny WAV corpora written on the fly, and where FSDD is."""

from pathlib import Path

import numpy as np
import pytest
import torch

FSDD_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def tone(frequency: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A sine at ``frequency`` Hz with a little noise, float32 in [-0.5, 0.5]."""
    time = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(time))
    return (0.4 * np.sin(2 * np.pi * frequency * time) + noise).astype(np.float32)


def write_corpus(root: Path, rate: int = 8000, per_class: int = 10) -> Path:
    """Class folders ``low`` (300 Hz) and ``high`` (1,200 Hz) of ``per_class`` clips of 0.3 to 0.5 s."""
    soundfile = pytest.importorskip("soundfile", reason="writing WAVs needs soundfile")
    for label, frequency in (("low", 300.0), ("high", 1200.0)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            samples = tone(frequency * (1 + 0.02 * index), 0.3 + 0.02 * index, rate, seed=index)
            soundfile.write(str(root / label / f"{index:02d}.wav"), samples, rate)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread per test: the machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(name="tone")
def tone_fixture():
    """:func:`tone`, for the tests."""
    return tone


@pytest.fixture
def corpus():
    """:func:`write_corpus`, for the tests: ``corpus(root, rate=8000, per_class=10)``."""
    return write_corpus


@pytest.fixture
def fsdd_root() -> Path:
    """The shared data folder holding fsdd/recordings; the test is skipped where it is absent."""
    if not (FSDD_ROOT / "fsdd" / "recordings").is_dir():
        pytest.skip(f"FSDD is not at {FSDD_ROOT / 'fsdd'} (git clone free-spoken-digit-dataset there to run this)")
    return FSDD_ROOT
