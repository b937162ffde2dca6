"""``python train.py`` and ``python -m lightopt.preview`` as a user runs them: outputs, exit codes, messages."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import QUICK, run_cli

CONFIG_ERROR = 2


@pytest.mark.parametrize(
    "overrides,key,mentions",
    [
        (["optimizer.lr=0"], "optimizer.lr=0", "> 0"),
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1", "> 0"),
        (["optimizer.lr=fast"], "optimizer.lr='fast'", "number"),
        (["optimizer._target_=torch.optim.NoSuchOptimizer"], "optimizer._target_", "import"),
        (["schedule.warmup=100000"], "schedule.warmup=100000", "longer than training"),
        (["schedule.min_lr=0.5"], "schedule.min_lr=0.5", "initial lr"),
        (["schedule.name=cosinus"], "schedule.name='cosinus'", "cosine"),
        (["objective.metric=val/accuracy"], "objective.metric='val/accuracy'", "val/acc"),
        (["objective.direction=up"], "objective.direction='up'", "maximize"),
        (["schedule=plateau", "schedule.monitor=val/f1"], "schedule.monitor='val/f1'", "val/loss"),
        (["trainer.max_epochs=-1", "schedule=linear"], "schedule.total_steps", "max_epochs"),
        (["tune=lr_find", "tune.mode=cubic"], "tune.mode='cubic'", "exponential | linear"),
    ],
)
def test_bad_input_exits_before_training_with_a_clear_message(tmp_path, overrides, key, mentions):
    run_dir = tmp_path / "run"
    proc = run_cli(*QUICK, *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == CONFIG_ERROR, proc.stderr[-2000:]
    line = next(l for l in proc.stderr.splitlines() if l.startswith("lightopt: config error:"))
    assert key in line and mentions in line, line
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("group,bad,listed", [("optimizer", "adamm", "adam"), ("schedule", "cosin", "cosine"),
                                              ("model", "resnet", "mlp")])
def test_unknown_group_choice_lists_the_available_ones(tmp_path, group, bad, listed):
    proc = run_cli(f"{group}={bad}", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"Could not find '{group}/{bad}'" in proc.stderr
    assert f"Available options in '{group}'" in proc.stderr and listed in proc.stderr


def test_run_directory_and_earlier_results_are_never_clobbered(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (run_dir / "results.json").read_text()
    again = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == CONFIG_ERROR
    assert "refusing to overwrite" in again.stderr
    assert (run_dir / "results.json").read_text() == before


def test_preview_writes_csv_and_png(tmp_path):
    out = tmp_path / "preview"
    proc = run_cli("schedule=cosine", "schedule.warmup=20", "schedule.min_lr=1.0e-5", "steps=200", "optimizer.lr=1.0e-3",
                   "regularization=l2", f"hydra.run.dir={out}", cwd=tmp_path, module="lightopt.preview")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "learning rate by optimizer step" in proc.stdout
    with open(out / "schedule.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "default", "no_decay"]
    lrs = [float(r[1]) for r in rows[1:]]
    assert len(lrs) == 200
    assert lrs[0] == pytest.approx(1e-3 / 20)  # warmup starts low
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] < 2e-5  # decayed to min_lr
    png = (out / "schedule.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not (out / "results.json").exists()  # nothing trained


def test_preview_rejects_bad_steps(tmp_path):
    proc = run_cli("steps=0", f"hydra.run.dir={tmp_path / 'p'}", cwd=tmp_path, module="lightopt.preview")
    assert proc.returncode == CONFIG_ERROR
    assert "steps=0" in proc.stderr


@pytest.mark.slow
def test_default_training_reaches_high_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["metrics"]["val/acc"]["final"] >= 0.95
    assert res["wall_seconds"] < 60
    assert (run_dir / "metrics.csv").exists()
    # Lightning's messages are printed once, in Hydra's format, and kept in the run's log file
    assert (proc.stdout + proc.stderr).count("`Trainer.fit` stopped") == 1
    assert "`Trainer.fit` stopped" in (run_dir / "train.log").read_text()


def test_ddp_on_two_cpu_processes_writes_one_result(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("trainer=ddp_cpu", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                   "schedule=linear", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    # 1437 training rows split over 2 ranks -> 718 each -> 12 batches of 64 per epoch, the same on both ranks
    assert res["global_step"] == 24
    with open(run_dir / "metrics.csv") as f:
        lrs = [float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")]
    assert len(lrs) == 24  # one writer (rank 0), the horizon counted per rank
    assert lrs[-1] == pytest.approx(3e-3 * (1 - 23 / 24))
