"""Spoken digits and speakers, as JSON: on FSDD's official test split, a self-supervised audio encoder
trained with ``contrastkit.runs.train`` (as ``contrastkit train --dataset fsdd --method simclr`` does)
beside MFCC statistics (mean and standard deviation of 20 MFCCs over each clip's frames); with
``--espeak``, verification of unseen speakers on an espeak corpus, beside MFCC statistics and
Resemblyzer's pretrained speaker encoder.

FSDD figures, all on the 300 test clips (recordings 0-4 of each speaker and digit), probes fitted on
the 2,700 training clips: digit accuracy and speaker identification by kNN and by linear probe
(L-BFGS logistic regression on standardised features); speaker verification EER and minDCF
(p_target 0.01, C_miss = C_fa = 1) by cosine scoring over all 44,850 pairs of test clips. FSDD has
six speakers, all seen in training, so this is verification of seen speakers on unseen recordings.

With ``--espeak CSV`` (a corpus of :mod:`contrastkit.data.espeak`, its test voices held out), a
speaker encoder is trained on the corpus' training voices (``--espeak-method``, supervised on the
speakers) and scored on every pair of the held-out voices' clips, beside: the FSDD encoder above,
MFCC statistics, and Resemblyzer (``pip install resemblyzer``: its own preprocessing of each
original file, 16 kHz, silence trimmed; skipped with a note where it is not installed). All score
the same trials.

Example::

    contrastkit make-speech /tmp/speech --voices 40 --test-voices 10
    PYTHONPATH=src python benchmarks/speech.py --data-root ../shared/data --epochs 10 \
        --espeak /tmp/speech/clips.csv > speech.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from contrastkit import runs
from contrastkit.config import Config
from contrastkit.data.audio import load_audio_folder
from contrastkit.evaluate import extract_features
from contrastkit.evaluate.verification import verification_scores
from contrastkit.models.audio import mfcc_statistics

KEYS = ("knn_top1", "linear_top1", "speaker_knn_top1", "speaker_linear_top1", "eer", "min_dcf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder holding fsdd/recordings")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default="mel_cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--espeak", default=None, help="clips.csv of an espeak corpus: unseen-speaker EER")
    parser.add_argument("--espeak-method", default="aam_softmax", help="speaker training on the corpus' train voices")
    parser.add_argument("--espeak-backbone", default="mel_cnn")
    parser.add_argument("--espeak-epochs", type=int, default=30)
    parser.add_argument("--espeak-rate", type=int, default=16000, help="sample rate the corpus is resampled to")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="speech-"))
    start = time.perf_counter()
    run_dir = train(Config(dataset="fsdd", method=args.method, backbone=args.backbone, epochs=args.epochs,
                           seed=args.seed, data_root=args.data_root, device="cpu", out=str(out / "fsdd"),
                           progress=False, plot=False))
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {
        "benchmark": "speech/fsdd", "split": "official test (recordings 0-4), 300 clips; 2,700 train",
        "method": args.method, "backbone": args.backbone, "epochs": args.epochs, "seed": args.seed,
        "encoder": {key: summary.get(key) for key in KEYS},
        "mfcc_statistics": {key: summary.get(f"raw_{key}") for key in KEYS},
        "min_dcf_parameters": {"p_target": 0.01, "c_miss": 1, "c_fa": 1, "normalised": True},
        "seconds": round(time.perf_counter() - start, 1),
        "device": f"cpu, {torch.get_num_threads()} threads, {os.cpu_count()} cores ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv), "run_dir": str(run_dir),
    }
    if args.espeak:
        espeak_start = time.perf_counter()
        speaker_run = train(Config(dataset=f"audio:{args.espeak}", method=args.espeak_method,
                                   backbone=args.espeak_backbone, epochs=args.espeak_epochs, seed=args.seed,
                                   device="cpu", out=str(out / "espeak"), progress=False, plot=False,
                                   modality_options={"audio": {"target": "speaker",
                                                               "sample_rate": args.espeak_rate}}))
        result["espeak_unseen_speakers"] = {
            "speaker_training": {"method": args.espeak_method, "backbone": args.espeak_backbone,
                                 "epochs": args.espeak_epochs, "sample_rate": args.espeak_rate,
                                 "seconds": round(time.perf_counter() - espeak_start, 1)},
            **espeak_verification({"trained_on_espeak_train_voices": speaker_run, "trained_on_fsdd": run_dir},
                                  args.espeak)}
    print(json.dumps(result, indent=2))


def train(config: Config) -> Path:
    """``runs.train(config)``, its tables sent to stderr so that stdout holds only the JSON."""
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        return runs.train(config)
    finally:
        sys.stdout = stdout


def espeak_verification(run_dirs: dict[str, Path], table: str) -> dict[str, object]:
    """EER and minDCF on every pair of the held-out voices' clips of an espeak corpus: of each run's
    encoder (at its sample rate and clip length), of MFCC statistics (at the first run's) and of
    Resemblyzer where installed (on the original files)."""
    figures: dict[str, object] = {}
    held_out = None
    for name, run_dir in run_dirs.items():
        run = runs.Run.load(run_dir)
        seconds = run.config.modality_options["audio"]["seconds"]
        held_out = load_audio_folder(table, sample_rate=run.splits.sample_rate, seconds=seconds).test
        figures[name] = rounded(verification_scores(extract_features(run.method.backbone, held_out.waveforms),
                                                    held_out.speakers))
        if "mfcc_statistics" not in figures:
            mfcc = mfcc_statistics(held_out.waveforms, held_out.lengths, run.splits.sample_rate)
            figures["mfcc_statistics"] = rounded(verification_scores(mfcc, held_out.speakers))
    figures["resemblyzer"] = resemblyzer_scores(held_out.paths, held_out.speakers)
    return {"clips": len(held_out), "speakers": int(held_out.speakers.unique().numel()),
            "trials": len(held_out) * (len(held_out) - 1) // 2, **figures}


def rounded(scores: dict[str, float]) -> dict[str, float]:
    return {key: round(scores[key], 4) for key in ("eer", "min_dcf")}


def resemblyzer_scores(paths: list[str], speakers: torch.Tensor) -> dict[str, object]:
    """Resemblyzer's EER and minDCF on the clips at ``paths``, each read at its own rate and
    preprocessed as its README does (``preprocess_wav``: 16 kHz, normalised, silences trimmed)."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as error:
        return {"skipped": f"resemblyzer is not installed ({error}); pip install resemblyzer"}
    from contrastkit.data.audio import read_audio

    encoder = VoiceEncoder("cpu", verbose=False)
    embeddings = []
    for path in paths:
        samples, rate = read_audio(path)
        embeddings.append(torch.from_numpy(encoder.embed_utterance(preprocess_wav(samples, source_sr=rate))))
    return rounded(verification_scores(torch.stack(embeddings), speakers))


if __name__ == "__main__":
    main()
