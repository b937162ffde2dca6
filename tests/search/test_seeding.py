"""A study starts informed: ``hydra.sweeper.enqueue`` (parameter sets tried first) and ``hydra.sweeper.warm_start``
(an earlier study's completed trials, where they fit), each once, through the command line of a Hydra app."""

from __future__ import annotations

import yaml

from tests.helpers import rows, run_tiny


def sweep(tmp_path, name: str, *args: str):
    proc = run_tiny("-m", *args, f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path)
    return proc, (rows(tmp_path / name) if (tmp_path / name / "trials.csv").exists() else [])


def test_enqueued_parameter_sets_run_first_and_count_in_n_trials(tmp_path):
    args = ["x=interval(0,2)", "y=int(interval(-2,2))", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.enqueue=[{x:1.0,y:0},{y:2}]"]
    proc, table = sweep(tmp_path, "s", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 enqueued parameter sets first" in proc.stdout
    assert len(table) == 4
    assert (float(table[0]["x"]), table[0]["y"], float(table[0]["value"])) == (1.0, "0", 0.0)
    assert table[1]["y"] == "2" and 0 <= float(table[1]["x"]) <= 2  # x left out: sampled
    # a resumed sweep does not enqueue them again
    proc, again = sweep(tmp_path, "s", *args[:2], "hydra.sweeper.n_trials=5", args[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(again) == 5 and again[:4] == table


def test_an_enqueued_value_outside_the_space_is_one_line(tmp_path):
    proc, table = sweep(tmp_path, "s", "x=interval(0,2)", "hydra.sweeper.enqueue=[{x:3.0}]")
    assert proc.returncode == 2 and table == []
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("lightopt: config error: hydra.sweeper.enqueue[0].x=3.0: outside the space"), line
    proc, _ = sweep(tmp_path, "t", "x=interval(0,2)", "hydra.sweeper.enqueue=[{z:1}]")
    assert proc.returncode == 2 and "z is not searched" in proc.stderr and "(x)" in proc.stderr


def test_a_warm_start_copies_the_trials_that_fit_and_they_do_not_count(tmp_path):
    proc, first = sweep(tmp_path, "old", "x=interval(0,2)", "y=choice(0,1)", "hydra.sweeper.n_trials=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fitting = [r for r in first if float(r["x"]) <= 1.0]
    # a changed space: x narrowed to [0, 1]
    source = f"hydra.sweeper.warm_start={{storage:'sqlite:///{tmp_path / 'old' / 'optuna.db'}'}}"
    proc, table = sweep(tmp_path, "new", "x=interval(0,1)", "y=choice(0,1)", "hydra.sweeper.n_trials=2", source)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warm start: {len(fitting)} of 6 completed trials copied from app-" in proc.stdout
    copied, own = table[:len(fitting)], table[len(fitting):]
    assert [(r["x"], r["y"], r["value"]) for r in copied] == [(r["x"], r["y"], r["value"]) for r in fitting]
    assert len(own) == 2 and all((tmp_path / "new" / r["number"]).is_dir() for r in own)
    results = yaml.safe_load((tmp_path / "new" / "optimization_results.yaml").read_text())
    assert results["trials"] == {"COMPLETE": len(fitting) + 2}


def test_a_warm_start_from_a_storage_without_studies_is_one_line(tmp_path):
    proc, _ = sweep(tmp_path, "s", "x=interval(0,2)",
                    f"hydra.sweeper.warm_start={{storage:'sqlite:///{tmp_path / 'none.db'}'}}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lightopt: config error: hydra.sweeper.warm_start.")
    assert not (tmp_path / "none.db").exists()  # a mistyped path is not created
