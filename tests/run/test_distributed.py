"""DDP inside sweeps: every rank of a trial runs that trial's config, in that trial's directory."""

import csv
import json
import os
import re
import sys

import pytest

from lightopt.contract import TrialContext
from lightopt.run.ranks import rank_command
from tests.helpers import run_cli


def test_rank_command_is_a_single_run_of_the_trial_in_its_directory(tmp_path):
    cmd = rank_command(["python", "/src/train.py"], ["trainer=ddp_cpu", "optimizer.lr=0.0123", "optimizer=adam"],
                       tmp_path / "3", "train", 1)
    assert cmd[:2] == ["python", "/src/train.py"]
    assert "-m" not in cmd and "--multirun" not in cmd
    # the trial's values; the rank finds its Optuna trial in the trial.json of the directory it shares
    assert {"trainer=ddp_cpu", "optimizer.lr=0.0123", "optimizer=adam"} <= set(cmd)
    assert not any(c.startswith(("hydra.sweep", "hydra/sweeper")) for c in cmd)
    assert f'hydra.run.dir="{(tmp_path / "3").resolve()}"' in cmd
    assert "hydra.job.name=train_rank1" in cmd and "hydra.output_subdir=null" in cmd


def test_each_job_of_a_sweep_gets_its_trial_context_with_the_sweeps_command(tmp_path):
    from tests.helpers import LR, sweep_in_process

    seen: list[TrialContext | None] = []

    def task(cfg) -> float:
        seen.append(TrialContext.current())
        return 0.0

    ours = {k: v for k, v in os.environ.items() if k.startswith("LIGHTOPT")}
    sweep_in_process(tmp_path, task, "hydra.sweeper.n_trials=2", LR)
    assert [c.number for c in seen] == [0, 1]
    assert all(c.entry_point[0] == sys.executable for c in seen)  # how DDP ranks of the trial are started
    assert all(c.searched == ("optimizer.lr",) for c in seen)
    assert seen[1].run_dir == str((tmp_path / "1").absolute())
    # nothing passes through the environment: a `python train.py trainer=ddp` started later finds its own script
    assert {k: v for k, v in os.environ.items() if k.startswith("LIGHTOPT")} == ours


def rank_lines(log_text: str) -> list[tuple[str, str, int]]:
    """(metric value, status, step) of the 'rank N: ...' line of a non-zero rank's log."""
    return [(v, s, int(n)) for v, s, n in re.findall(r"rank \d+: val/acc = (\S+) \((\w+)\) at step (\d+)", log_text)]


@pytest.mark.slow
def test_ddp_trials_of_a_sweep_each_run_in_one_directory_with_agreeing_ranks(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "trainer=ddp_cpu", "logger=csv", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false", "checkpoint.enabled=false", "hydra/sweeper/sampler=grid",
                   "optimizer.lr=choice(0.001,0.003)", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep_dir / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {d.name for d in sweep_dir.iterdir() if d.is_dir()} == {"0", "1"}
    # no rank started a sweep or a run directory of its own
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    values = set()
    for trial in trials:
        run_dir = sweep_dir / trial["number"]
        res = json.loads((run_dir / "results.json").read_text())
        assert res["status"] == "completed" and res["trial"] == int(trial["number"])
        # 1437 training rows over 2 ranks: 12 batches of 64 per rank and epoch
        assert res["global_step"] == 24
        # rank 1 ran the same trial (its lr), reached the same step and the same reduced objective
        (value, status, step), = rank_lines((run_dir / "train_rank1.log").read_text())
        assert (float(value), status, step) == (pytest.approx(res["value"]), "completed", 24)
        assert float(trial["value"]) == pytest.approx(res["value"])
        values.add(res["value"])
    assert len(values) == 2  # two different learning rates, two different results


@pytest.mark.slow
def test_a_pruned_ddp_trial_stops_on_every_rank(tmp_path):
    # lr 1e-5 stays near chance after one epoch and falls below the threshold; lr 3e-3 passes it
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "trainer=ddp_cpu", "logger=csv", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false", "checkpoint.enabled=false", "hydra/sweeper/sampler=grid",
                   "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.5",
                   "optimizer.lr=choice(0.00001,0.003)", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep_dir / "trials.csv") as f:
        states = {t["optimizer.lr"]: (t["state"], t["number"]) for t in csv.DictReader(f)}
    assert {lr: state for lr, (state, _) in states.items()} == {"1e-05": "PRUNED", "0.003": "COMPLETE"}
    for state, number in states.values():
        run_dir = sweep_dir / number
        res = json.loads((run_dir / "results.json").read_text())
        steps = 12 if state == "PRUNED" else 36  # pruned at the first validation, else 3 epochs of 12 steps
        assert (res["status"], res["global_step"]) == (state.lower().replace("complete", "completed"), steps)
        # rank 1 stopped with rank 0: the same status at the same step, no rank left waiting
        (_, status, step), = rank_lines((run_dir / "train_rank1.log").read_text())
        assert (status, step) == (res["status"], steps)
