"""`contrastkit tune` on digits: a 6-trial study, killed and resumed, its best trial beside the
default recipe, as JSON.

1. The default recipe, ``contrastkit train --dataset digits --method simclr``: its kNN top-1.
2. ``contrastkit tune --space benchmarks/tune_digits.yaml --dataset digits --method simclr
   --trials 6 --study OUT/study``, killed with SIGKILL as trial ``--kill-at`` starts, then the same
   command with ``--resume``: the trials finished before the kill must keep their folders untouched
   (summary.json not rewritten) and the killed one must run again.
3. The best config and the default recipe trained again with other seeds (``--seeds``): is the
   gain larger than what the seed moves? (The study picks its best trial by the test split's kNN,
   so its own figure is optimistic; the other seeds are not picked from.)

    PYTHONPATH=src python3 benchmarks/tune_digits.py --out runs/tune-digits-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from contrastkit import config as config_module
from contrastkit import tune as tuning

SPACE = Path(__file__).resolve().parent / "tune_digits.yaml"
BASE = ["--dataset", "digits", "--method", "simclr", "progress=false"]


def contrastkit(*arguments: str) -> list[str]:
    return [sys.executable, "-u", "-m", "contrastkit", *arguments]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(tuning.__file__).resolve().parents[1]))


def train_knn(out: Path, *arguments: str) -> float:
    """kNN top-1 of a `contrastkit train` run (no plots, no raw baseline: neither changes the run)."""
    subprocess.run(contrastkit("train", "--out", str(out), "plot=false", "raw_baseline=false", *arguments),
                   check=True, env=environment(), stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())["knn_top1"]


def tune_killed_at(command: list[str], trial: int) -> float:
    """Run ``command`` until trial ``trial`` starts, then SIGKILL it; returns the seconds it ran."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment())
    for line in process.stdout:
        print(line, end="", file=sys.stderr)
        if line.startswith(f"trial {trial}: "):  # asked for (RUNNING in study.db) and starting
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(f"the study ended (exit code {process.returncode}) before trial {trial} started")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs and the study")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--kill-at", type=int, default=3, help="SIGKILL the study as this trial starts")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="seeds to train both configs again with")
    args = parser.parse_args()
    study_dir = args.out / "study"
    result: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                              "space": config_module.load_yaml(SPACE)}

    start = time.perf_counter()
    result["default_knn_top1"] = train_knn(args.out / "default", *BASE)
    result["default_minutes"] = round((time.perf_counter() - start) / 60, 2)

    command = contrastkit("tune", "--space", str(SPACE), "--trials", str(args.trials), "--study", str(study_dir),
                          *BASE)
    seconds = tune_killed_at(command, args.kill_at)
    storage = f"sqlite:///{study_dir / tuning.DATABASE}"
    before = optuna.load_study(study_name=tuning.STUDY_NAME, storage=storage).trials
    finished_before = [t.number for t in before if t.state.name in ("COMPLETE", "PRUNED")]
    written = {n: (study_dir / f"trial-{n:04d}" / "summary.json").stat().st_mtime_ns
               for n in finished_before if (study_dir / f"trial-{n:04d}" / "summary.json").exists()}
    start = time.perf_counter()
    resumed = subprocess.run([*command, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=environment())
    print(resumed.stdout, file=sys.stderr)
    resumed.check_returncode()
    seconds += time.perf_counter() - start

    trials = optuna.load_study(study_name=tuning.STUDY_NAME, storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    result["study"] = {
        "minutes": round(seconds / 60, 2),
        "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                    **{key: t.user_attrs[key] for key in ("pruned", "failed", "retry_of") if key in t.user_attrs}}
                   for t in trials],
        "finished": len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]),
        "pruned": len([t for t in trials if t.state.name == "PRUNED"]),
        "killed_trial_ran_again": any(t.user_attrs.get("retry_of") == args.kill_at for t in trials),
        "finished_before_the_kill": finished_before,
        "finished_before_the_kill_untouched": all((study_dir / f"trial-{n:04d}" / "summary.json").stat().st_mtime_ns
                                                  == mtime for n, mtime in written.items()),
        "best_trial": best.number, "best_knn_top1": best.value, "best_params": best.params,
    }
    # The best config and the default one trained again with seeds the study never saw.
    best_yaml = study_dir / tuning.BEST
    result["other_seeds"] = {str(seed): {
        "default": train_knn(args.out / f"default-seed{seed}", *BASE, f"seed={seed}"),
        "best": train_knn(args.out / f"best-seed{seed}", "--config", str(best_yaml), "progress=false",
                          f"seed={seed}")} for seed in args.seeds}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
