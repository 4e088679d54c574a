"""A synthetic multi-speaker speech corpus from espeak-ng: every voice variant is a speaker, every text
a label, each spoken several times at a random speed and pitch (seeded). The corpus is a folder of
WAVs and a ``clips.csv`` (``path,label,speaker,split``) that ``contrastkit train --dataset
audio:OUT/clips.csv`` reads; the last ``test_voices`` voices form the test split, so verification
on it is of speakers unseen in training.

espeak-ng is a system package (``apt-get install espeak-ng``); its English voice variants (about a
hundred: ``espeak-ng --voices=variant``) are the speakers.

Example::

    contrastkit make-speech /tmp/speech --voices 40 --test-voices 10 --repeats 3
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from contrastkit.errors import ConfigError, ContrastkitError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's words per minute and pitch (0-99) are drawn from these ranges for each clip.
SPEEDS, PITCHES = (130, 190), (30, 70)


def espeak_binary() -> str:
    """The path of espeak-ng, or a ContrastkitError saying how to install it."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise ContrastkitError("espeak-ng is not installed; install it (apt-get install espeak-ng) to make a "
                               "speech corpus.")
    return binary


def espeak_voices() -> list[str]:
    """The voice variants espeak-ng offers (``Adam``, ``f3``, ...), sorted as it lists them."""
    listing = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True, check=True)
    return [line.split()[4].removeprefix("!v/") for line in listing.stdout.splitlines()[1:] if len(line.split()) >= 5]


def make_speech_corpus(out: str | Path, *, texts: Sequence[str] = DIGITS, voices: int | Sequence[str] = 40,
                       test_voices: int = 10, repeats: int = 3, language: str = "en", seed: int = 0) -> Path:
    """Speak every text in every voice ``repeats`` times into ``out`` and write ``out/clips.csv``.

    Args:
        out: the folder to write (WAVs under ``out/<voice>/``).
        texts: the words or sentences, each a label.
        voices: how many of espeak-ng's variants to use (the first in its listing), or their names.
        test_voices: how many voices (the last ones) form the test split.
        repeats: renditions of each text per voice, each at a random speed and pitch.
        language: the espeak-ng language the variants speak.
        seed: seed of the speeds and pitches.

    Returns:
        The path of ``clips.csv``.
    """
    binary = espeak_binary()
    available = espeak_voices()
    chosen = list(voices) if not isinstance(voices, int) else available[:voices]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ConfigError(f"unknown espeak-ng voice(s) {', '.join(unknown)}; `espeak-ng --voices=variant` lists them.")
    if isinstance(voices, int) and voices > len(available):
        raise ConfigError(f"espeak-ng offers {len(available)} voice variants, fewer than the {voices} asked for.")
    if not 0 < test_voices < len(chosen):
        raise ConfigError(f"test_voices must leave voices for both splits: 0 < test_voices < {len(chosen)}, "
                          f"got {test_voices}.")
    if repeats < 1 or not texts:
        raise ConfigError(f"give at least one text and repeats >= 1, got {len(texts)} texts and repeats={repeats}.")
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for number, voice in enumerate(chosen):
        split = "test" if number >= len(chosen) - test_voices else "train"
        (out / voice).mkdir(parents=True, exist_ok=True)
        for label, text in enumerate(texts):
            for repeat in range(repeats):
                speed, pitch = rng.integers(*SPEEDS), rng.integers(*PITCHES)
                path = out / voice / f"{label}_{repeat}.wav"
                subprocess.run([binary, "-v", f"{language}+{voice}", "-s", str(speed), "-p", str(pitch), "-w",
                                str(path), text], check=True, capture_output=True)
                rows.append((path.relative_to(out).as_posix(), text, voice, split))
    table = out / "clips.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(("path", "label", "speaker", "split"))
        writer.writerows(rows)
    return table
