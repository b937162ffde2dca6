"""``tune=lr_find``: the learning-rate range test before training, and the run it leaves behind."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import pytest
import torch

from lightopt.core.schedules import create_scheduler
from lightopt.errors import ConfigError
from lightopt.run.training import run
from lightopt.run.tune import smoothed, suggest
from tests.helpers import CONF, QUICK, assert_same_last_weights, compose_cfg, run_cli

# a short test: 40 lr values from 2e-3 to 10, where the loss of every shipped optimizer falls clearly on digits
FIND = ["tune=lr_find", "tune.num_training=40", "tune.min_lr=2.0e-3", "tune.max_lr=10.0"]
OPTIMIZERS = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
PLAIN = [o for o in OPTIMIZERS if not o.endswith("_schedulefree")]
SCHEDULES = sorted(p.stem for p in (CONF / "schedule").glob("*.yaml"))


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def lr_rows(path: Path) -> list[dict[str, str]]:
    with open(path / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/lr")]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def expected_lrs(schedule, lr0: float, steps: int, total: int) -> list[float]:
    """The lr of each optimizer step of ``schedule`` for an optimizer at ``lr0`` (no validation observed)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    scheduler = create_scheduler(opt, schedule, total)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_lr_find_sets_lr0_of_the_schedule_and_writes_its_curve(tmp_path):
    cfg = compose_cfg(*QUICK, *FIND, "optimizer=adam", "optimizer.lr=3.0e-3", "schedule=cosine", "schedule.warmup=4")
    run(cfg, tmp_path)
    res = results(tmp_path)
    found = res["lr_find"]
    suggestion = found["suggestion"]
    assert math.isfinite(suggestion) and suggestion > 0
    assert suggestion != pytest.approx(3e-3)
    assert 2e-3 <= suggestion <= 10.0
    assert found["configured_lr"] == pytest.approx(3e-3)
    assert found["min_lr"] == 2e-3 and found["max_lr"] == 10.0 and found["num_training"] == 40
    assert found["mode"] == "exponential" and 10 <= found["steps"] <= 40
    # the rule: a tenth of the lr at the lowest smoothed loss (or where the loss had begun to fall, if higher)
    assert found["rule"] == "min_loss/10" and found["min_loss_lr"] / 10 <= suggestion <= found["min_loss_lr"]
    assert found["descent"] >= 0.05
    with open(tmp_path / "lr_find.csv") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == found["steps"] and float(curve[0]["lr"]) == pytest.approx(2e-3)
    # the curve starts at the untrained loss, ln(10) for 10 classes (Lightning's own started at half of it)
    assert float(curve[0]["loss"]) == pytest.approx(math.log(10), abs=0.15)
    assert float(curve[0]["smoothed_loss"]) == pytest.approx(math.log(10), abs=0.15)
    assert res["lr"] == suggestion and res["status"] == "completed"
    assert res["global_step"] == 10  # the test's steps are not counted: training starts at step 0

    lrs = [float(r["train/lr"]) for r in lr_rows(tmp_path)]
    assert len(lrs) == 10
    assert lrs[0] == pytest.approx(suggestion / 4)  # warmup: lr0 * (t + 1) / W with lr0 = the suggestion
    assert lrs[3] == pytest.approx(suggestion)  # the peak after warmup
    assert lrs == pytest.approx(expected_lrs(cfg.schedule, suggestion, 10, 10))

    assert cfg.optimizer.lr == 3e-3  # the composed config keeps the lr the user gave
    width, height = png_size(tmp_path / "lr_find.png")
    assert width >= 300 and height >= 200
    assert found["plot"] == "lr_find.png"
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))  # Lightning's checkpoint of the test is removed
    with open(tmp_path / "metrics.csv") as f:
        logged = [float(r["lr_find/suggestion"]) for r in csv.DictReader(f) if r.get("lr_find/suggestion")]
    assert logged == [suggestion]


def test_training_after_lr_find_is_a_run_at_the_suggested_lr(tmp_path, monkeypatch):
    """Weights, optimizer state, RNG and lr multipliers are as if the test never ran."""
    from lightopt.run.module import LitModel

    # no reseeding per epoch: dropout masks come from the RNG state the test left behind
    monkeypatch.setattr(LitModel, "on_train_epoch_start", lambda self: None)
    common = [*QUICK, "model.dropout=0.2", "regularization=l2", "lr_multipliers={6.*:10.0}", "optimizer=adamw"]
    tuned, plain = tmp_path / "tuned", tmp_path / "plain"
    run(compose_cfg(*common, *FIND), tuned)
    suggestion = results(tuned)["lr_find"]["suggestion"]
    run(compose_cfg(*common, f"optimizer.lr={suggestion!r}"), plain)

    tuned_rows, plain_rows = lr_rows(tuned), lr_rows(plain)
    cols = sorted(k for k in tuned_rows[0] if k.startswith("train/lr"))
    assert [[r[c] for c in cols] for r in tuned_rows] == [[r[c] for c in cols] for r in plain_rows]
    head = [c for c in cols if c.startswith("train/lr/6.*")]
    assert head and float(tuned_rows[0][head[0]]) == pytest.approx(10 * suggestion)  # the multiplier is kept

    assert_same_last_weights(tuned, plain)
    assert results(tuned)["value"] == results(plain)["value"]


def test_the_test_runs_every_param_group_at_its_multiple_of_the_swept_lr(tmp_path, monkeypatch):
    from lightopt.run.module import LitModel

    seen: list[list[float]] = []
    original = LitModel.on_before_optimizer_step

    def record(self, optimizer):
        seen.append([g["lr"] for g in optimizer.param_groups])
        original(self, optimizer)

    monkeypatch.setattr(LitModel, "on_before_optimizer_step", record)
    run(compose_cfg(*QUICK, *FIND, "lr_multipliers={4.*:10.0}", "tune.early_stop_threshold=null"), tmp_path)
    finder, training = seen[:40], seen[40:]
    assert len(training) == 10
    ratios = {round(lrs[-1] / lrs[0], 6) for lrs in finder}
    assert ratios == {10.0}  # default group at the swept lr, the head at 10x
    assert finder[0][0] == pytest.approx(2e-3) and finder[-1][0] > 1.0  # the sweep from min_lr upwards
    suggestion = results(tmp_path)["lr_find"]["suggestion"]
    assert training[0] == pytest.approx([suggestion, 10 * suggestion])


@pytest.mark.parametrize(
    "optimizer,schedule",
    # every optimizer, and every schedule at least once
    [(o, s) for o, s in zip(PLAIN, SCHEDULES + SCHEDULES[: len(PLAIN) - len(SCHEDULES)], strict=False)]
    + [(o, "constant") for o in OPTIMIZERS if o.endswith("_schedulefree")],  # they take no schedule
)
def test_lr_find_works_with_every_optimizer_and_schedule(tmp_path, optimizer, schedule):
    cfg = compose_cfg(*QUICK, *FIND, f"optimizer={optimizer}", f"schedule={schedule}", "trainer.max_epochs=1")
    run(cfg, tmp_path)
    res = results(tmp_path)
    suggestion = res["lr_find"]["suggestion"]
    assert res["status"] == "completed"
    assert math.isfinite(suggestion) and suggestion > 0 and res["lr"] == suggestion
    assert suggestion != pytest.approx(cfg.optimizer.lr)
    lrs = [float(r["train/lr"]) for r in lr_rows(tmp_path)]
    assert lrs == pytest.approx(expected_lrs(cfg.schedule, suggestion, 5, 5))  # lr0 = the suggestion
    png_size(tmp_path / "lr_find.png")


def test_lr_find_replaces_the_lr_of_lr_scaling(tmp_path):
    cfg = compose_cfg(*QUICK, *FIND, "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant",
                      "lr_scaling.rule=linear", "lr_scaling.base_batch_size=32")
    run(cfg, tmp_path)
    res = results(tmp_path)
    assert res["lr_find"]["configured_lr"] == pytest.approx(0.2)  # 0.1 x 64/32: what the test replaced
    assert res["lr"] == res["lr_find"]["suggestion"]
    assert float(lr_rows(tmp_path)[0]["train/lr"]) == pytest.approx(res["lr"])


def test_no_suggestion_stops_before_training_naming_the_tune_keys(tmp_path):
    # an lr so large that the loss is not finite after the first step: nothing to suggest from
    cfg = compose_cfg(*QUICK, *FIND, "optimizer=sgd", "tune.min_lr=1.0e6", "tune.max_lr=1.0e9")
    with pytest.raises(ConfigError, match=r"tune=.*no suggestion.*tune.num_training.*tune.early_stop_threshold"):
        run(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "checkpoints").exists()
    png_size(tmp_path / "lr_find.png")  # the curve that explains it is kept


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["tune.name=lr_finder"], r"tune.name='lr_finder'.*none \| lr_find"),
        (["tune.min_lr=0"], r"tune.min_lr=0.*> 0"),
        (["tune.max_lr=1.0e-7"], r"tune.max_lr=1e-07.*> tune.min_lr"),
        (["tune.num_training=9"], r"tune.num_training=9.*>= 10"),
        (["tune.mode=cubic"], r"tune.mode='cubic'.*exponential \| linear"),
        (["tune.early_stop_threshold=0.5"], r"tune.early_stop_threshold=0.5.*> 1"),
        (["+tune.steps=10"], r"tune.steps=10.*unknown key"),
        (["ckpt_path=last.ckpt"], r"tune.name='lr_find'.*ckpt_path"),
    ],
)
def test_bad_tune_config_fails_before_anything_is_built(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run(compose_cfg(*QUICK, "tune=lr_find", *overrides), tmp_path)
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "lr_find.png").exists()


def test_tune_none_is_the_default_and_writes_no_curve(tmp_path):
    cfg = compose_cfg(*QUICK)
    assert cfg.tune.name == "none"
    run(cfg, tmp_path)
    assert results(tmp_path)["lr_find"] is None
    assert not (tmp_path / "lr_find.png").exists()


@pytest.mark.slow  # the same error in process: test_no_suggestion_stops_before_training_naming_the_tune_keys
def test_cli_no_suggestion_exits_2(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(*QUICK, *FIND, "optimizer=sgd", "tune.min_lr=1.0e6", "tune.max_lr=1.0e9",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = next(l for l in proc.stderr.splitlines() if l.startswith("lightopt: config error:"))
    assert "tune=" in line and "tune.num_training" in line and "lr_find.png" in line
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.json").exists()


@pytest.mark.slow
def test_lr_find_in_a_sweep_tunes_every_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, *FIND, "trainer.max_epochs=1", "optimizer=choice(sgd,adam)",
                   "hydra/sweeper/sampler=grid", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep_dir / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        res = results(Path(trial["run_dir"]))
        assert res["lr"] == res["lr_find"]["suggestion"] and res["status"] == "completed"
        png_size(Path(trial["run_dir"]) / "lr_find.png")
    assert "lightopt run" not in proc.stdout  # summary panels are left to the sweeper's own lines


@pytest.mark.slow
def test_lr_find_under_ddp_gives_every_rank_the_same_lr(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv",
                   "schedule=constant", *FIND, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results(run_dir)
    assert res["status"] == "completed" and res["lr"] == res["lr_find"]["suggestion"]
    assert all(float(r["train/lr"]) == pytest.approx(res["lr"]) for r in lr_rows(run_dir))
    png_size(run_dir / "lr_find.png")
    # the replicas stay identical only if both ranks train at the same lr: rank 1 says which it took
    rank1 = (run_dir / "train_ddp_process_1.log").read_text()
    assert f"rank 1: tune=lr_find: lr {res['lr']:g}" in rank1


# --- the rule, on curves of known shape -----------------------------------------------------------------


def test_the_smoothed_loss_starts_at_the_first_loss_and_keeps_a_constant_one():
    assert smoothed([2.3] * 50) == pytest.approx([2.3] * 50)
    assert smoothed([2.0, 1.0])[0] == 2.0
    # Lightning's finder divides by 1 - beta^(k+1) with k = global_step after the step: its first point
    lightning_first = (1 - 0.98) * 2.3 / (1 - 0.98**2)
    assert lightning_first == pytest.approx(2.3 / 1.98)


def range_test(lrs, loss_of):
    return list(lrs), [loss_of(lr) for lr in lrs]


LRS = [1e-5 * 10 ** (i / 10) for i in range(71)]  # 1e-5 to 1e2, 10 points a decade


def test_the_suggestion_is_a_tenth_of_the_lr_at_the_lowest_loss():
    # flat at 2.3 until the loss falls from lr 1e-3, lowest at lr 1e-1, then blows up
    def loss(lr):
        falling = 2.3 - 1.8 * min(1, math.log10(lr / 1e-3) / 2)
        return 2.3 if lr < 1e-3 else falling + (50 * (lr - 0.1) if lr > 0.1 else 0)

    found = suggest(*range_test(LRS, loss))
    # the median filter places a sharp minimum within half its window (2 points of 10 a decade)
    assert 0.06 <= found.min_loss_lr <= 0.1 and found.lr == pytest.approx(found.min_loss_lr / 10)
    assert 0.6 < found.descent < 1.8 / 2.3 and found.problem is None  # the fall from 2.3, smoothed


def test_the_suggestion_is_never_below_where_the_loss_began_to_fall():
    # nothing changes below lr 0.05, the lowest loss is at 0.1: 0.01 would be an lr at which the test trained nothing
    def loss(lr):
        return 2.3 if lr < 0.05 else (1.0 if lr <= 0.1 else 20.0)

    found = suggest(*range_test(LRS, loss))
    assert 0.05 <= found.min_loss_lr <= 0.1 and found.lr == pytest.approx(0.05, rel=0.01)


def test_no_clear_descent_gives_no_suggestion():
    noisy_flat = [2.3 + 0.02 * math.sin(i) for i in range(len(LRS))]
    found = suggest(LRS, noisy_flat)
    assert found.lr is None and "no clear descent" in found.problem
    assert suggest(LRS[:5], [2.3] * 5).lr is None  # too few points


def test_the_curve_ends_at_the_first_loss_that_is_not_finite():
    losses = [2.3 - 0.02 * i for i in range(40)] + [math.nan] + [0.01] * 30  # the low losses after NaN do not count
    found = suggest(LRS, losses)
    assert found.min_loss_lr == pytest.approx(LRS[39], rel=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_suggestion_trains_about_as_well_as_the_default_lr(tmp_path, optimizer):
    """The default range test (100 steps, 1e-6 to 10) on digits, then the default 20 epochs."""
    common = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              f"optimizer={optimizer}"]
    run(compose_cfg(*common, "tune=lr_find"), tmp_path / "tuned")
    run(compose_cfg(*common), tmp_path / "default")
    tuned, default = results(tmp_path / "tuned"), results(tmp_path / "default")
    assert tuned["lr"] == tuned["lr_find"]["suggestion"] != default["lr"]
    assert tuned["value"] >= default["value"] - 0.03, (tuned["lr"], tuned["value"], default["value"])
