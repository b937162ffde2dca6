"""Benchmarks of the sweeper on digits: which sampler finds the best, and what pruning saves.

    python bench/sweeps.py [--small] [--only samplers|pruning] [--out FILE]

1. ``samplers``: the best val/acc found by random, TPE and GP search with the same trial budget over the
   same space, median over seeds.
2. ``pruning``: a TPE sweep without a pruner and with each shipped pruner (median, percentile, successive
   halving, hyperband) at the same trial count and seeds (0, 1, 2): total training steps, wall time and best value.
   Target: the same best value (within noise) with at most half the steps.

Each sweep is a real ``python train.py -m ...`` in a subprocess; results are read from its ``trials.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# momentum SGD on the MLP: lr over five decades, momentum, width, weight decay
SPACE = [
    "optimizer=momentum",
    "regularization=l2",
    "optimizer.lr=tag(log,interval(1e-4,1.0))",
    "optimizer.momentum=interval(0.0,0.99)",
    "model.width=choice(16,32,64,128)",
    "regularization.weight_decay=tag(log,interval(1e-6,1e-2))",
]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "checkpoint.enabled=false", "trainer.accelerator=cpu"]


def sweep(work: Path, name: str, overrides: list[str]) -> list[dict[str, str]]:
    out = work / name
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={out}", *QUIET, *SPACE, *overrides]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {name} failed:\n{proc.stderr[-3000:]}")
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def best(trials: list[dict[str, str]]) -> float:
    return max(float(t["value"]) for t in trials if t["state"] == "COMPLETE" and t["value"])


def samplers(work: Path, n_trials: int, epochs: int, seeds: list[int]) -> dict[str, Any]:
    found: dict[str, list[float]] = {}
    for sampler in ("random", "tpe", "gp"):
        for seed in seeds:
            trials = sweep(work, f"{sampler}-{seed}", [f"hydra/sweeper/sampler={sampler}", f"hydra.sweeper.seed={seed}",
                                                        f"hydra.sweeper.n_trials={n_trials}",
                                                        f"trainer.max_epochs={epochs}"])
            found.setdefault(sampler, []).append(best(trials))
    return {
        "n_trials": n_trials,
        "epochs": epochs,
        "seeds": seeds,
        "median_best_val_acc": {s: round(statistics.median(v), 4) for s, v in found.items()},
        "best_val_acc_per_seed": {s: [round(x, 4) for x in v] for s, v in found.items()},
    }


PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


def pruning(work: Path, n_trials: int, epochs: int, seeds: list[int],
            pruners: tuple[str, ...] = PRUNERS) -> dict[str, Any]:
    per_seed: dict[str, list[dict[str, Any]]] = {p: [] for p in pruners}
    for seed in seeds:
        for pruner in pruners:
            start = time.perf_counter()
            trials = sweep(work, f"prune-{pruner}-{seed}", [
                f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.seed={seed}",
                f"hydra.sweeper.n_trials={n_trials}", f"trainer.max_epochs={epochs}"])
            per_seed[pruner].append({
                "seed": seed,
                "best_val_acc": round(best(trials), 4),
                "training_steps": sum(int(t["steps"] or 0) for t in trials),
                "sweep_seconds": round(time.perf_counter() - start, 1),
                "pruned_trials": sum(t["state"] == "PRUNED" for t in trials),
            })
    base = {r["seed"]: r["training_steps"] for r in per_seed["none"]} if "none" in per_seed else None
    summary = {}
    for pruner, runs in per_seed.items():
        if base:
            for r in runs:
                r["steps_ratio"] = round(r["training_steps"] / base[r["seed"]], 3)
        summary[pruner] = {
            "median_steps_ratio": statistics.median(r["steps_ratio"] for r in runs) if base else None,
            "median_best_val_acc": statistics.median(r["best_val_acc"] for r in runs),
            "runs": runs,
        }
    return {
        "n_trials": n_trials,
        "epochs": epochs,
        "seeds": seeds,
        "pruners": summary,
        "target": "steps_ratio <= 0.5 at a comparable best value",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny budgets: only checks that it works")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "sweeps.json")
    parser.add_argument("--only", choices=("samplers", "pruning"), help="run one of the two benchmarks")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "samplers"):
            results["samplers"] = samplers(work, 3, 1, [0]) if args.small else samplers(work, 20, 3, [0, 1, 2])
        if args.only in (None, "pruning"):
            results["pruning"] = (pruning(work, 4, 2, [0], ("none", "median")) if args.small
                                  else pruning(work, 30, 8, [0, 1, 2]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
