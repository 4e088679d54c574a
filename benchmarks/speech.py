"""Spoken digits and speakers on FSDD's official test split, as JSON: a self-supervised audio encoder
trained with ``contrastkit.runs.train`` (as ``contrastkit train --dataset fsdd --method simclr`` does)
beside MFCC statistics (mean and standard deviation of 20 MFCCs over each clip's frames).

Figures, all on the 300 test clips (recordings 0-4 of each speaker and digit), probes fitted on the
2,700 training clips: digit accuracy and speaker identification by kNN and by linear probe (L-BFGS
logistic regression on standardised features); speaker verification EER and minDCF (p_target 0.01,
C_miss = C_fa = 1) by cosine scoring over all 44,850 pairs of test clips. FSDD has six speakers, all
seen in training, so this is verification of seen speakers on unseen recordings, not of unseen
speakers. With ``--espeak CSV`` (a corpus of :mod:`contrastkit.data.espeak`), the same encoder,
trained on FSDD only, also embeds that corpus' test split (voices held out of it, resampled to 8 kHz),
and EER and minDCF over all its pairs are given beside MFCC statistics: unseen speakers, and
synthetic ones.

Example::

    python -m contrastkit.data.espeak /tmp/speech --voices 40 --test-voices 10
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="speech-"))
    start = time.perf_counter()
    config = Config(dataset="fsdd", method=args.method, backbone=args.backbone, epochs=args.epochs, seed=args.seed,
                    data_root=args.data_root, device="cpu", out=str(out), progress=False, plot=False)
    # runs.train prints its tables; stdout is kept for the JSON.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        run_dir = runs.train(config)
    finally:
        sys.stdout = stdout
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
        result["espeak_unseen_speakers"] = espeak_verification(run_dir, args.espeak)
    print(json.dumps(result, indent=2))


def espeak_verification(run_dir: Path, table: str) -> dict[str, object]:
    """EER and minDCF of the run's encoder and of MFCC statistics on the held-out voices of an espeak
    corpus, at the run's sample rate and clip length."""
    run = runs.Run.load(run_dir)
    options = run.config.modality_options["audio"]
    held_out = load_audio_folder(table, sample_rate=run.splits.sample_rate, seconds=options["seconds"]).test
    encoder = verification_scores(extract_features(run.method.backbone, held_out.waveforms), held_out.speakers)
    mfcc = verification_scores(mfcc_statistics(held_out.waveforms, held_out.lengths, run.splits.sample_rate),
                               held_out.speakers)
    return {"clips": len(held_out), "speakers": int(held_out.speakers.unique().numel()), "trials": encoder["trials"],
            "encoder": {key: round(encoder[key], 4) for key in ("eer", "min_dcf")},
            "mfcc_statistics": {key: round(mfcc[key], 4) for key in ("eer", "min_dcf")}}


if __name__ == "__main__":
    main()
