"""End-to-end training through the composed Hydra config (in process), as ``python train.py`` runs it."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from lightopt.errors import ConfigError
from lightopt.run.training import run
from tests.helpers import QUICK, assert_same_last_weights, compose_cfg


def read_results(path):
    return json.loads((path / "results.json").read_text())


def read_metrics(path):
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_default_run_writes_results(tmp_path):
    value = run(compose_cfg(*QUICK), tmp_path)
    res = read_results(tmp_path)
    assert res["objective"] == "val/acc" and res["direction"] == "maximize"
    assert res["status"] == "completed"
    assert res["value"] == pytest.approx(value)
    assert res["value"] == res["metrics"]["val/acc"]["best"]
    assert set(res["metrics"]) >= {"val/acc", "val/loss"}
    for record in res["metrics"].values():
        assert {"final", "best"} <= set(record)
    assert res["metrics"]["val/loss"]["best"] <= res["metrics"]["val/loss"]["final"]
    assert res["global_step"] == 10 and res["epochs"] == 2
    assert res["wall_seconds"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_refuses_to_overwrite_a_finished_run(tmp_path):
    run(compose_cfg(*QUICK), tmp_path)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ConfigError, match="results.json"):
        run(compose_cfg(*QUICK), tmp_path)
    assert (tmp_path / "results.json").read_text() == before


@pytest.mark.parametrize(
    "optimizer,schedule",
    [
        ("sgd", "constant"),
        ("momentum", "step"),
        ("nesterov", "exponential"),
        ("rmsprop", "linear"),
        ("adamw", "cosine"),
        ("radam", "wsd"),
        ("muon", "onecycle"),
        ("adafactor", "inverse_sqrt"),
        ("adam", "plateau"),
    ],
)
def test_optimizer_schedule_pairs_train(tmp_path, optimizer, schedule):
    cfg = compose_cfg(*QUICK, f"optimizer={optimizer}", f"schedule={schedule}")
    run(cfg, tmp_path)
    res = read_results(tmp_path)
    assert res["status"] == "completed"
    assert 0.0 <= res["value"] <= 1.0
    lrs = [float(r["train/lr"]) for r in read_metrics(tmp_path) if r.get("train/lr")]
    assert len(lrs) == res["global_step"]  # the learning rate of every optimizer step is logged
    assert all(lr > 0 for lr in lrs)


def test_lr_per_group_is_logged_when_there_are_several(tmp_path):
    cfg = compose_cfg(*QUICK, "regularization=l2", "lr_multipliers={2.*:10.0}")
    run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    lr_cols = sorted(k for k in rows[0] if k.startswith("train/lr/"))
    assert len(lr_cols) >= 3  # default, no_decay and the multiplied head
    first = next(r for r in rows if r.get("train/lr"))
    head = [float(first[c]) for c in lr_cols if c.startswith("train/lr/2.*")]
    assert head and all(h == pytest.approx(10 * float(first["train/lr"])) for h in head)


def test_horizon_accounts_for_accumulation_and_limited_batches(tmp_path):
    # 7 batches per epoch, 2 per optimizer step -> ceil(7/2) = 4 steps per epoch, 3 epochs -> T = 12
    cfg = compose_cfg(
        *QUICK, "schedule=linear", "schedule.lr_final=0.0", "trainer.max_epochs=3",
        "trainer.limit_train_batches=7", "trainer.accumulate_grad_batches=2", "optimizer.lr=0.01",
    )
    run(cfg, tmp_path)
    lrs = [float(r["train/lr"]) for r in read_metrics(tmp_path) if r.get("train/lr")]
    assert len(lrs) == 12
    assert lrs == pytest.approx([0.01 * (1 - t / 12) for t in range(12)])


def test_penalty_is_logged_with_l1(tmp_path):
    run(compose_cfg(*QUICK, "regularization=l1", "trainer.log_every_n_steps=1"), tmp_path)
    pens = [float(r["train/penalty"]) for r in read_metrics(tmp_path) if r.get("train/penalty")]
    assert pens and all(p > 0 for p in pens)


def test_regression_recovers_the_line(tmp_path):
    run(compose_cfg("experiment=regression", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                    "logger=csv"),
        tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    w, b = ckpt["state_dict"]["model.weight"].item(), ckpt["state_dict"]["model.bias"].item()
    assert w == pytest.approx(2.0, abs=0.05)
    assert b == pytest.approx(1.0, abs=0.05)
    assert read_results(tmp_path)["direction"] == "minimize"


def test_divergence_is_a_status_not_a_crash(tmp_path):
    cfg = compose_cfg(*QUICK, "optimizer=sgd", "optimizer.lr=1.0e12", "schedule=constant")
    value = run(cfg, tmp_path)
    res = read_results(tmp_path)
    assert res["status"] == "diverged"
    assert value == -math.inf  # the worst value for the direction, for the caller
    assert res["value"] is None  # strict JSON: no -Infinity; the status says why
    assert res["global_step"] < 10  # stopped early


def test_resume_continues_lr_sequence_and_weights(tmp_path):
    common = [*QUICK, "trainer.limit_train_batches=6", "schedule=cosine", "schedule.warmup=3",
              "schedule.total_steps=24", "model.dropout=0.2", "seed=0"]
    full = tmp_path / "full"
    run(compose_cfg(*common, "trainer.max_epochs=4"), full)
    first = tmp_path / "first"
    run(compose_cfg(*common, "trainer.max_epochs=2"), first)
    resumed = tmp_path / "resumed"
    run(compose_cfg(*common, "trainer.max_epochs=4", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"), resumed)

    def lrs(path):
        return {int(r["step"]): float(r["train/lr"]) for r in read_metrics(path) if r.get("train/lr")}

    full_lrs, resumed_lrs = lrs(full), {**lrs(first), **lrs(resumed)}
    assert sorted(full_lrs) == list(range(24))
    assert resumed_lrs == full_lrs

    assert_same_last_weights(full, resumed)


def test_plateau_reduces_lr_once_per_stalled_validation(tmp_path):
    # lr too small to change accuracy: every validation after the first is a non-improvement
    cfg = compose_cfg(
        *QUICK, "optimizer=sgd", "optimizer.lr=1.0e-9", "schedule=plateau", "schedule.patience=1",
        "schedule.factor=0.5", "trainer.max_epochs=5", "trainer.limit_train_batches=4",
        "objective.metric=val/loss", "objective.direction=minimize",
    )
    run(cfg, tmp_path)
    lrs = [float(r["train/lr"]) for r in read_metrics(tmp_path) if r.get("train/lr")]
    per_epoch = [lrs[i * 4] for i in range(5)]
    # epoch 0 and 1 at lr0 (first value is the best so far, then 1 bad epoch <= patience)
    assert per_epoch[0] == per_epoch[1] == pytest.approx(1e-9)
    assert per_epoch[-1] < per_epoch[0]
    # within an epoch the lr is constant: observations happen only at validations
    for e in range(5):
        assert len(set(lrs[e * 4:(e + 1) * 4])) == 1


def test_unlogged_objective_fails_before_training(tmp_path):
    cfg = compose_cfg(*QUICK, "objective.metric=val/accuracy")
    with pytest.raises(ConfigError, match="objective.metric='val/accuracy'.*val/acc"):
        run(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_unlogged_plateau_monitor_fails_before_training(tmp_path):
    cfg = compose_cfg(*QUICK, "schedule=plateau", "schedule.monitor=val/f1")
    with pytest.raises(ConfigError, match="schedule.monitor='val/f1'"):
        run(cfg, tmp_path)


@pytest.mark.parametrize(
    "rule,batch_size,accumulate,factor",
    [
        ("none", 32, 1, 1.0),
        ("linear", 32, 1, 0.5),
        ("linear", 32, 4, 2.0),  # the global batch counts accumulated batches
        ("sqrt", 16, 1, 0.5),
        ("sqrt", 256, 1, 2.0),
    ],
)
def test_lr_is_scaled_with_the_global_batch(tmp_path, rule, batch_size, accumulate, factor):
    cfg = compose_cfg(
        *QUICK, "optimizer=sgd", "optimizer.lr=0.1", "schedule=constant", f"lr_scaling.rule={rule}",
        "lr_scaling.base_batch_size=64", f"data.batch_size={batch_size}",
        f"trainer.accumulate_grad_batches={accumulate}", "trainer.limit_train_batches=8",
    )
    run(cfg, tmp_path)
    lrs = [float(r["train/lr"]) for r in read_metrics(tmp_path) if r.get("train/lr")]
    assert lrs[0] == pytest.approx(0.1 * factor)
    assert read_results(tmp_path)["lr"] == pytest.approx(0.1 * factor)
    assert cfg.optimizer.lr == 0.1  # the composed config keeps the lr the user gave


def test_lr_is_reported_without_scaling(tmp_path):
    run(compose_cfg(*QUICK, "optimizer.lr=0.002"), tmp_path)
    assert read_results(tmp_path)["lr"] == pytest.approx(0.002)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["lr_scaling.rule=cubic"], r"lr_scaling.rule='cubic'.*allowed: none \| linear \| sqrt"),
        (["lr_scaling.rule=linear", "lr_scaling.base_batch_size=0"], r"lr_scaling.base_batch_size=0.*integer > 0"),
        (["lr_scaling.rule=sqrt", "data.batch_size=null"], r"data.batch_size=None.*lr_scaling.rule=sqrt"),
    ],
)
def test_bad_lr_scaling_fails_before_training(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run(compose_cfg(*QUICK, *overrides), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_lr_scale_factor_counts_every_process_and_accumulated_batch():
    from lightopt.run.training import lr_scale_factor

    assert lr_scale_factor("linear", 64, 2, 1, 64) == 2.0
    assert lr_scale_factor("sqrt", 32, 2, 2, 32) == pytest.approx(2.0)
    assert lr_scale_factor("none", 8, 4, 4, 64) == 1.0


def test_last_checkpoint_is_the_final_state_even_when_the_objective_stopped_improving(tmp_path):
    import torch

    # an lr too small to change accuracy: the best checkpoint stays at the first validation
    cfg = compose_cfg(*QUICK, "trainer.max_epochs=3", "optimizer=sgd", "optimizer.lr=1.0e-9", "schedule=constant")
    run(cfg, tmp_path)
    res = read_results(tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == res["global_step"] == 15
    assert res["best_checkpoint"].endswith("best-epoch000.ckpt")  # the monitored one, not last.ckpt
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]


def test_lr_layer_decay_from_the_command_line_logs_each_depths_lr(tmp_path):
    run(compose_cfg(*QUICK, "lr_layer_decay=0.5", "model.layers=2"), tmp_path)
    rows = [r for r in read_metrics(tmp_path) if r.get("train/lr/default/depth0")]
    assert rows
    for r in rows:  # the MLP's three Linear layers, two of them below the output
        top = float(r["train/lr/default/depth0"])
        assert float(r["train/lr/default/depth1"]) == pytest.approx(0.5 * top)
        assert float(r["train/lr/default/depth2"]) == pytest.approx(0.25 * top)
