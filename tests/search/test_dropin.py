"""hydra-optuna-sweeper's syntax and rules hold unchanged with ``hydra/sweeper=lightopt``: on a Hydra app of the
tests' own (``tests/apps/tiny``, no torch) and on ``train.py``."""

from __future__ import annotations

import pytest

from tests.helpers import LR, QUICK, bowl, rows, run_tiny, sweep_in_process


def sweep(tmp_path, *args: str):
    proc = run_tiny("-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    return proc, (rows(tmp_path / "sweep") if (tmp_path / "sweep" / "trials.csv").exists() else [])


def test_int_intervals_are_integers_log_scaled_when_tagged(tmp_path):
    proc, table = sweep(tmp_path, "y=int(interval(-3,3))", "x=tag(log,int(interval(1,100)))",
                        "hydra.sweeper.n_trials=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(table) == 6
    assert all(r["y"].lstrip("-").isdigit() and -3 <= int(r["y"]) <= 3 for r in table)
    assert all(r["x"].isdigit() and 1 <= int(r["x"]) <= 100 for r in table)


def test_shuffle_is_a_categorical_choice(tmp_path):
    proc, table = sweep(tmp_path, "y=shuffle(range(1,4))", "x=shuffle(choice(0.5,1.5))", "hydra.sweeper.n_trials=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {r["y"] for r in table} <= {"1", "2", "3"} and {r["x"] for r in table} <= {"0.5", "1.5"}


def test_range_includes_its_stop_as_in_hydra_optuna_sweeper(tmp_path):
    proc, table = sweep(tmp_path, "hydra/sweeper/sampler=grid", "y=range(1,3)", "x=range(0.5,2.5,step=1)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted((float(r["x"]), int(r["y"])) for r in table) == [(x, y) for x in (0.5, 1.5, 2.5) for y in (1, 2, 3)]


def test_a_sweep_without_a_searched_parameter_runs_n_trials_repeats(tmp_path):
    proc, table = sweep(tmp_path, "x=0.5", "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["state"] for r in table] == ["COMPLETE"] * 3 and {r["value"] for r in table} == {"0.25"}


def test_an_explicit_max_failure_rate_of_0_stops_at_the_first_failed_trial(tmp_path):
    proc, table = sweep(tmp_path, "y=choice(7)", "fail_if=7", "hydra.sweeper.max_failure_rate=0.0",
                        "hydra.sweeper.n_trials=10")
    assert proc.returncode == 1
    assert "1 of 1 finished trials failed, more than max_failure_rate=0" in proc.stderr
    assert [r["state"] for r in table] == ["FAIL"]


def test_the_default_failure_rule_goes_on_past_a_first_failure(tmp_path):
    proc, table = sweep(tmp_path, "y=choice(0,7)", "fail_if=7", "hydra/sweeper/sampler=grid")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(r["state"] for r in table) == ["COMPLETE", "FAIL"]


def test_motpe_names_what_replaced_it(tmp_path):
    proc, _ = sweep(tmp_path, "hydra/sweeper/sampler=motpe", "x=interval(0,2)")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("lightopt: config error: hydra.sweeper.sampler._target_='optuna.samplers.MOTPESampler': "
                           "removed from Optuna 4"), line
    assert "hydra/sweeper/sampler=tpe" in line and "nsgaii" in line


def test_optimized_metric_other_than_the_objective_is_refused(tmp_path, capsys):
    # lightning-hydra-template's search configs name the metric there; lightopt's runs are judged by objective.metric
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, bowl, "+optimized_metric=val/loss", LR)
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("lightopt: config error: optimized_metric='val/loss': it differs from "
                           "objective.metric='val/acc'; allowed: objective.metric=val/loss"), line


def test_optimized_metric_equal_to_the_objective_is_accepted(tmp_path):
    sweep_in_process(tmp_path, bowl, "+optimized_metric=val/acc", LR, "hydra.sweeper.n_trials=2")
    assert len(rows(tmp_path)) == 2


def test_a_trial_that_never_validated_fails_with_the_reason(tmp_path):
    from lightopt.train import task

    # one optimizer step ends training before the first validation (at the end of the epoch)
    with pytest.raises(SystemExit) as exit_:  # no trial completed
        sweep_in_process(tmp_path, task, *QUICK, "logger=none", "++trainer.max_steps=1", LR,
                         "hydra.sweeper.n_trials=1")
    assert exit_.value.code == 1
    (row,) = rows(tmp_path)
    assert row["state"] == "FAIL" and row["status"] == "failed"
    assert "no validation before training ended at step 1" in (tmp_path / "0" / "results.json").read_text()


def test_the_same_syntax_searches_train_py_config_keys_and_groups(tmp_path):
    sweep_in_process(tmp_path, bowl, "model.width=int(interval(16,64))", "data.batch_size=range(32,64,32)",
                     "optimizer=shuffle(choice(sgd,adam))", LR, "hydra/sweeper/sampler=random",
                     "hydra.sweeper.n_trials=6")
    table = rows(tmp_path)
    assert len(table) == 6
    assert all(r["model.width"].isdigit() and 16 <= int(r["model.width"]) <= 64 for r in table)
    assert {r["data.batch_size"] for r in table} <= {"32", "64"} and {r["optimizer"] for r in table} <= {"sgd", "adam"}
