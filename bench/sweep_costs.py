"""Benchmark cases of what a sweep costs besides its trials' training (``bench/run.py`` runs them).

- ``sweeper_overhead``: the same jobs of the trivial app (``bench/trivial``: x^2 + y^2, no torch) under
  ``hydra/sweeper=basic`` and ``hydra/sweeper=lightopt``, whole commands in alternating rounds.
- ``sweeper_flat``: the per-trial cost of a long lightopt sweep of the trivial app, its last trials over its first.
- ``digits_trial_cost``: a 20-trial, 3-epoch digits sweep: the share of its wall time not spent in training and
  validation steps, and its wall time over the basic sweeper running the same jobs.
- ``cpu_sweep_parallel``, ``sweep_idle``: trials in flight (see ``bench/run.py``'s docstring).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.rounds import spread

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = ROOT / "bench" / "trivial" / "app.py"


def run_sweep(cmd: list[str], out: Path, cwd: Path) -> float:
    """Wall seconds of one sweep command writing to a fresh ``out``."""
    out = out.resolve()  # the command runs in ``cwd``
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    proc = subprocess.run([*cmd, f"hydra.sweep.dir={out}"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {out.name} failed:\n{proc.stderr[-3000:]}")
    return seconds


def study_trials(sweep_dir: Path) -> list[Any]:
    """A lightopt sweep's trials, in trial order, from its study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}")
    return sorted(study.trials, key=lambda t: t.number)


def trivial_commands(n: int) -> tuple[list[str], list[str]]:
    """The basic and the lightopt sweep of the same ``n`` jobs of the trivial app."""
    basic = [sys.executable, str(TRIVIAL), "-m", "hydra/sweeper=basic", f"x=range(0,{n})"]
    lightopt = [sys.executable, str(TRIVIAL), "-m", "hydra/sweeper=lightopt", "hydra/sweeper/sampler=random",
                f"hydra.sweeper.n_trials={n}", "hydra.sweeper.report=false", f"x=interval(0,{n})"]
    return basic, lightopt


def sweeper_overhead(small: bool, work: Path) -> dict[str, Any]:
    n, rounds = (10, 1) if small else (100, 3)
    basic_cmd, lightopt_cmd = trivial_commands(n)
    basic, lightopt = [], []
    for r in range(rounds):
        basic.append(run_sweep(basic_cmd, work / f"trivial-basic-{r}", work))
        lightopt.append(run_sweep(lightopt_cmd, work / f"trivial-lightopt-{r}", work))
    lo, ba = statistics.median(lightopt), statistics.median(basic)
    return {
        "ratio": round(lo / ba, 3),
        "lightopt_ms_per_trial": round(1000 * lo / n, 1),
        "basic_ms_per_trial": round(1000 * ba / n, 1),
        "measures": f"wall time of {n} jobs of the trivial app (start-up included) under hydra/sweeper=lightopt "
                    "(random sampler, no report) over hydra/sweeper=basic",
        "n_trials": n,
        "rounds": rounds,
        "target": "<= 1.15",
    } | spread([a / b for a, b in zip(lightopt, basic, strict=True)])


def sweeper_flat(small: bool, work: Path) -> dict[str, Any]:
    n, k = (30, 10) if small else (500, 50)
    out = work / "trivial-flat"
    run_sweep(trivial_commands(n)[1], out, work)
    starts = [t.datetime_start.timestamp() for t in study_trials(out)]
    # from one trial's start to the next: its whole cost (reserve, compose, run, tell, write the outputs)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    first, last = statistics.fmean(gaps[:k]), statistics.fmean(gaps[-k:])
    blocks = [round(1000 * statistics.fmean(gaps[i:i + k]), 1) for i in range(0, len(gaps), k)]
    return {
        "ratio": round(last / first, 3),
        f"last{k}_ms_per_trial": round(1000 * last, 1),
        f"first{k}_ms_per_trial": round(1000 * first, 1),
        "ms_per_trial_by_block": blocks,
        "measures": f"mean time from one trial's start to the next over the last {k} of {n} trials of the trivial "
                    f"app over the first {k} (hydra/sweeper=lightopt, one process)",
        "n_trials": n,
        "rounds": 1,
        "target": "<= 1.05 (flat: 1.0 within the noise of a shared machine)",
    }


def digits_commands(n: int, epochs: int) -> tuple[list[str], list[str]]:
    """The lightopt and the basic sweep of ``n`` digits trials of ``epochs`` epochs (default config otherwise)."""
    lrs = [round(1e-3 * (1 + 7 * i / max(1, n - 1)), 6) for i in range(n)]
    common = [sys.executable, str(ROOT / "train.py"), "-m", f"trainer.max_epochs={epochs}",
              "trainer.enable_progress_bar=false"]
    lightopt = [*common, "hydra/sweeper/sampler=grid", "hydra.sweeper.report=false",
                f"optimizer.lr=choice({','.join(map(str, lrs))})"]
    basic = [*common, "hydra/sweeper=basic", f"optimizer.lr={','.join(map(str, lrs))}"]
    return lightopt, basic


def digits_trial_cost(small: bool, work: Path) -> dict[str, Any]:
    n, epochs = (3, 1) if small else (20, 3)
    lightopt_cmd, basic_cmd = digits_commands(n, epochs)
    out = work / "digits-cost"
    wall = run_sweep(lightopt_cmd, out, work)
    basic = run_sweep(basic_cmd, work / "digits-cost-basic", work)
    results = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    if len(results) != n:
        raise RuntimeError(f"digits sweep: {len(results)} of {n} trials wrote results.json")
    steps = sum(r["step_seconds"] for r in results)
    runs = sum(r["wall_seconds"] for r in results)
    return {
        "ratio": round(wall / basic, 3),
        "lightopt_s_per_trial": round(wall / n, 3),
        "basic_s_per_trial": round(basic / n, 3),
        "not_training_share": round(1 - steps / wall, 3),
        "step_s_per_trial": round(steps / n, 3),
        "run_fixed_s_per_trial": round((runs - steps) / n, 3),
        "sweep_s_per_trial": round((wall - runs) / n, 3),
        "measures": f"a {n}-trial, {epochs}-epoch digits sweep (default config, grid over lr): its wall time over "
                    "hydra/sweeper=basic on the same jobs; not_training_share = 1 - (seconds in training and "
                    "validation batches) / wall time; per trial: steps, the rest of each run (results.json "
                    "wall_seconds - step_seconds), and the rest (start-up, Hydra, the sweeper)",
        "n_trials": n,
        "rounds": 1,
        "target": "ratio <= 1.0; not_training_share as low as start-up allows",
    }


def sweep_trials_per_min(work: Path, name: str, n_trials: int, epochs: int, accelerator: str,
                         parallel: int) -> float:
    """Trials per minute of a real ``python train.py -m`` sweep, ``parallel`` trials at a time."""
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/sweeper/sampler=random",
           f"hydra.sweeper.n_trials={n_trials}", "optimizer.lr=tag(log,interval(1e-4,1e-1))", "logger=csv",
           f"trainer.max_epochs={epochs}", f"trainer.accelerator={accelerator}", "trainer.enable_progress_bar=false",
           "trainer.enable_model_summary=false", "checkpoint.enabled=false"]
    if parallel > 1:  # n_jobs processes on the study, each running its trials one after another
        cmd += [f"hydra.sweeper.n_jobs={parallel}"]
    return 60 * n_trials / run_sweep(cmd, work / name, work)


def sweep_parallel(small: bool, work: Path, accelerator: str = "cpu") -> dict[str, Any]:
    # trials of a second or two of training: a 3-epoch digits trial trains for 0.2 s, less than its start-up
    n_trials, epochs = (2, 1) if small else (12, 20)
    sequential = sweep_trials_per_min(work, f"{accelerator}-sequential", n_trials, epochs, accelerator, 1)
    parallel = sweep_trials_per_min(work, f"{accelerator}-parallel", n_trials, epochs, accelerator, 2)
    return {
        "ratio": round(parallel / sequential, 3),
        "parallel_trials_per_min": round(parallel, 1),
        "sequential_trials_per_min": round(sequential, 1),
        "measures": "trials/min with 2 trials in flight (hydra.sweeper.n_jobs=2, torch threads split between them) "
                    "over 1 at a time, whole sweep incl. start-up",
        "n_trials": n_trials,
        "epochs_per_trial": epochs,
        "target": ">= 1.0",
    }


def idle_share(busy: list[float], span: float, slots: int) -> float:
    """The share of ``slots`` x ``span`` seconds in which no trial's own work ran."""
    return 1.0 - sum(busy) / (slots * span)


def barrier_span(busy: list[float], slots: int) -> float:
    """The span of the same trials asked ``slots`` at a time, each batch waiting for its slowest trial."""
    return sum(max(busy[i:i + slots]) for i in range(0, len(busy), slots))


def sweep_idle(small: bool, work: Path, launcher: str = "basic") -> dict[str, Any]:
    """Idle slot time of a sweep whose trials sleep 0.5 s or 4 s (tests/apps/tiny), two at a time."""
    n_trials, short, long = (4, 0.2, 0.8) if small else (16, 0.5, 4.0)
    out = work / f"idle-{launcher}"
    cmd = [sys.executable, str(ROOT / "tests" / "apps" / "tiny" / "app.py"), "-m", f"hydra/launcher={launcher}",
           "hydra/sweeper/sampler=random", f"hydra.sweeper.n_trials={n_trials}",
           "hydra.sweeper.n_jobs=2", f"sleep=choice({short},{long})", "x=interval(0,2)"]
    wall = run_sweep(cmd, out, work)
    trials = study_trials(out)
    busy = [float(t.params["sleep"]) for t in trials]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    idle = idle_share(busy, span, 2)
    return {
        "ratio": round(idle, 3),
        "idle_per_slot_time": round(idle, 3),
        "barrier_idle_per_slot_time": round(idle_share(busy, barrier_span(busy, 2), 2), 3),
        "with_start_up_idle_per_slot_time": round(idle_share(busy, wall, 2), 3),
        "measures": f"share of 2 slots x the span from the first trial's start to the last one's end in which no "
                    f"trial slept ({n_trials} trials of {short} or {long} s, hydra/launcher={launcher}); barrier: the "
                    "same trials in batches of 2 waiting for the slower, with no overhead at all; with_start_up: "
                    "over the whole command's wall time",
        "n_trials": n_trials,
        "target": "<= 0.15",
    }


