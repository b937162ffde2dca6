"""``python train.py`` and ``python -m lightopt.preview`` as a user runs them: outputs, exit codes, messages."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import QUICK, run_cli

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
    assert "it holds an earlier run" in again.stderr  # refused before Hydra wrote anything
    assert (run_dir / "results.json").read_text() == before


def test_preview_writes_csv_and_png(tmp_path):
    out = tmp_path / "preview"
    proc = run_cli("schedule=cosine", "schedule.warmup=20", "schedule.min_lr=1.0e-5", "steps=200",
                   "optimizer.lr=1.0e-3", "regularization=l2", f"hydra.run.dir={out}", cwd=tmp_path,
                   module="lightopt.preview")
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
    # only rank 0 prints: rank 1's lines are in its own log file
    out = proc.stdout + proc.stderr
    assert "rank 1:" not in out and out.count("W&B: no credentials") == 1 and "distributed_backend" not in out
    assert "rank 1: val/acc" in (run_dir / "train_ddp_process_1.log").read_text()


def read_lrs(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")]


def rank1_line(run_dir) -> tuple[str, int, float]:
    """(status, step, last lr) from the log line of DDP rank 1 (``train_ddp_process_1.log``)."""
    import re

    text = (run_dir / "train_ddp_process_1.log").read_text()
    (status, step, lr), = re.findall(r"rank 1: \S+ = \S+ \((\w+)\) at step (\d+), last lr (\S+)", text)
    return status, int(step), float(lr)


@pytest.mark.slow
def test_ddp_at_the_same_global_batch_has_the_one_device_schedule_and_full_validation(tmp_path):
    import torch
    from hydra.utils import instantiate

    from lightopt.run.training import build_model
    from tests.helpers import compose_cfg

    common = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              "logger=csv", "schedule=cosine", "schedule.warmup=5"]
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    # 2 ranks x 32 rows per step and 1 device x 64 rows: the same global batch
    proc = run_cli("trainer=ddp_cpu", "data.batch_size=32", f"hydra.run.dir={ddp}", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("trainer=cpu", "data.batch_size=64", f"hydra.run.dir={one}", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res_ddp, res_one = (json.loads((d / "results.json").read_text()) for d in (ddp, one))
    # 718 rows per rank / 32 and 1437 rows / 64: 23 steps per epoch either way, so the same horizon T
    assert res_ddp["global_step"] == res_one["global_step"] == 46
    assert read_lrs(ddp) == pytest.approx(read_lrs(one), rel=1e-9)
    assert read_lrs(ddp)[:5] == pytest.approx([3e-3 * (t + 1) / 5 for t in range(5)])  # warmup in steps too
    assert rank1_line(ddp) == ("completed", 46, pytest.approx(read_lrs(ddp)[-1]))

    # the objective is reduced over the ranks' halves of the validation set: it is the metric of the
    # final weights on the whole validation set, evaluated here on one process
    cfg = compose_cfg("trainer=cpu")
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule)
    state = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    datamodule.setup("fit")
    _, _, x_val, y_val = datamodule._splits
    with torch.no_grad():
        logits = model.eval()(x_val)
    assert res_ddp["metrics"]["val/loss"]["final"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y_val).item(), rel=1e-5)
    assert res_ddp["metrics"]["val/acc"]["final"] == pytest.approx((logits.argmax(1) == y_val).float().mean().item())


@pytest.mark.slow
def test_plateau_under_ddp_follows_the_reduced_metric_on_every_rank(tmp_path):
    run_dir = tmp_path / "run"
    threshold, epochs = 0.15, 5
    proc = run_cli("trainer=ddp_cpu", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                   "logger=csv", "schedule=plateau", "schedule.patience=0", "schedule.threshold_mode=abs",
                   f"schedule.threshold={threshold}", "objective.metric=val/loss", "objective.direction=minimize",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val_losses) == epochs
    # the lr of each epoch, as the plateau rule gives it from the (reduced) val/loss of the epochs before
    expected, best, scale = [3e-3, 3e-3], val_losses[0], 1.0
    for value in val_losses[1:-1]:
        if value < best - threshold:
            best = value
        else:
            scale *= 0.5
        expected.append(3e-3 * scale)
    lrs = read_lrs(run_dir)
    steps = len(lrs) // epochs  # 12 per epoch and rank
    assert [lrs[e * steps] for e in range(epochs)] == pytest.approx(expected)
    assert [lrs[e * steps] for e in range(epochs)] == [lrs[(e + 1) * steps - 1] for e in range(epochs)]
    assert len(set(expected)) > 1  # the run did reduce: the metric, not a fixed pattern, decided
    # rank 1 took the same decisions from the same reduced metric: the same lr at its last step
    assert rank1_line(run_dir) == ("completed", len(lrs), pytest.approx(lrs[-1]))
