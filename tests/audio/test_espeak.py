"""The espeak-ng corpus maker: voices as speakers, held-out voices as the test split, readable by the
audio unit. Skipped where espeak-ng is not installed."""

import shutil

import pytest
import torch

from contrastkit.data.audio import load_audio_folder
from contrastkit.data.espeak import espeak_voices, make_speech_corpus
from contrastkit.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (apt-get install espeak-ng)")


def test_a_corpus_of_voices_and_texts_loads_with_unseen_test_speakers(tmp_path):
    voices = espeak_voices()[:3]
    table = make_speech_corpus(tmp_path / "speech", texts=("one", "two"), voices=voices, test_voices=1, repeats=2)
    lines = table.read_text().splitlines()
    assert lines[0] == "path,label,speaker,split" and len(lines) == 1 + 3 * 2 * 2
    splits = load_audio_folder(table, sample_rate=8000, seconds=1.0)
    assert splits.classes == ["one", "two"] and splits.speaker_names == sorted(voices)
    assert (len(splits.train), len(splits.test)) == (8, 4)
    assert set(splits.test.speakers.tolist()).isdisjoint(splits.train.speakers.tolist())
    assert (splits.test.lengths > 0.2 * 8000).all() and torch.isfinite(splits.test.waveforms).all()
    # Seeded: the same speeds and pitches, so the same audio.
    again = make_speech_corpus(tmp_path / "again", texts=("one", "two"), voices=voices, test_voices=1, repeats=2)
    assert torch.equal(load_audio_folder(again, sample_rate=8000).test.waveforms, splits.test.waveforms)


def test_bad_requests_say_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="unknown espeak-ng voice"):
        make_speech_corpus(tmp_path, voices=["no-such-voice"])
    with pytest.raises(ConfigError, match="test_voices must leave voices for both splits"):
        make_speech_corpus(tmp_path, voices=2, test_voices=2)


def test_make_speech_writes_a_corpus_from_the_command_line(tmp_path, run_cli, capsys):
    out = tmp_path / "speech"
    assert run_cli("make-speech", str(out), "--voices", "3", "--test-voices", "1", "--repeats", "1",
                   "--texts", "yes", "no") == 0
    assert f"audio:{out / 'clips.csv'}" in capsys.readouterr().out
    assert len((out / "clips.csv").read_text().splitlines()) == 1 + 3 * 2
    assert run_cli("make-speech", str(tmp_path / "bad"), "--voices", "2", "--test-voices", "2") == 2
    assert "test_voices must leave voices" in capsys.readouterr().err
