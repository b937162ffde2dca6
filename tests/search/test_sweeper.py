"""The lightopt sweeper (``hydra/sweeper=lightopt``): samplers, grid, conditional spaces, failures, resume, sharing.

End-to-end tests run ``python train.py -m ...`` as a user would (each costs ~8 s of imports, so there are
few); sampler coverage runs the real sweeper in-process on a cheap task function.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from lightopt.contract import TrialContext
from lightopt.search.locks import FileLock
from lightopt.search.outcome import judge
from lightopt.storage import with_driver
from tests.helpers import (
    CONF,
    LR,
    QUICK,
    ROOT,
    bowl,
    load_study,
    out_of_memory,
    rows,
    run_cli,
    sweep_in_process,
    task_overrides,
    two_objectives,
    wait_for,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SLOW = [*QUICK, "trainer.max_epochs=25", "checkpoint.enabled=false"]  # a few seconds a trial: time to interrupt it


# ------------------------------------------------------------------------------------------- in-process sweeps


@pytest.mark.parametrize("sampler,extra", [
    ("random", []),
    ("tpe", ["hydra.sweeper.sampler.n_startup_trials=2"]),
    ("gp", ["hydra.sweeper.sampler.n_startup_trials=2"]),
    ("cmaes", []),
    ("qmc", []),
])
def test_each_sampler_runs_a_small_sweep(tmp_path, sampler, extra):
    sweep_in_process(tmp_path, bowl, f"hydra/sweeper/sampler={sampler}", *extra, "hydra.sweeper.n_trials=3",
                     LR, "optimizer=choice(sgd,adam)")
    table = rows(tmp_path)
    assert [r["number"] for r in table] == ["0", "1", "2"]
    assert {r["state"] for r in table} == {"COMPLETE"}
    assert all(1e-4 <= float(r["optimizer.lr"]) <= 1e-1 and r["optimizer"] in ("sgd", "adam") for r in table)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == max(float(r["value"]) for r in table)


def test_same_seed_same_suggestions_and_any_sampler_by_target(tmp_path):
    for name in ("a", "b"):
        sweep_in_process(tmp_path / name, bowl, "hydra.sweeper.n_trials=3", LR)
    assert [r["optimizer.lr"] for r in rows(tmp_path / "a")] == [r["optimizer.lr"] for r in rows(tmp_path / "b")]
    # an Optuna sampler given by _target_ only (TPE's other keys, left from the group, are dropped)
    sweep_in_process(tmp_path / "c", bowl, "hydra.sweeper.n_trials=3", LR,
                     "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler", "hydra.sweeper.seed=7")
    assert len(rows(tmp_path / "c")) == 3
    assert [r["optimizer.lr"] for r in rows(tmp_path / "c")] != [r["optimizer.lr"] for r in rows(tmp_path / "a")]


def test_every_keyword_of_a_shipped_sampler_is_set_from_the_command_line_without_plus(tmp_path):
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=3", LR, "hydra.sweeper.sampler.n_ei_candidates=7",
                     "hydra.sweeper.sampler.consider_endpoints=true", "hydra.sweeper.sampler.multivariate=true",
                     "hydra.sweeper.sampler.group=true", "hydra.sweeper.sampler.warn_independent_sampling=false")
    assert [r["state"] for r in rows(tmp_path)] == ["COMPLETE"] * 3


@pytest.mark.parametrize("name", ["grid", "random", "tpe", "gp", "cmaes", "qmc", "nsgaii"])
def test_each_shipped_sampler_config_lists_every_keyword_of_its_class(name):
    import inspect

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/sweeper/sampler={name}"], return_hydra_config=True)
    listed = {k for k in cfg.hydra.sweeper.sampler if not k.startswith("_")}
    assert listed == set(inspect.signature(SAMPLERS[name]).parameters) - {"search_space"}


@pytest.mark.parametrize("given", ["+hydra.sweeper.sampler.n_startup_trail=5",
                                   "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler "
                                   "hydra.sweeper.sampler.n_startup_trials=5"])
def test_a_keyword_the_sampler_does_not_take_is_refused_naming_those_it_does(tmp_path, capsys, given):
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, bowl, *given.split(), LR)
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    key = given.split()[-1].lstrip("+").split("=")[0]
    cls = "RandomSampler" if "Random" in given else "TPESampler"
    assert line.startswith(f"lightopt: config error: {key}=5: {cls} does not take it"), line
    assert f"allowed: a keyword argument of {cls}: " in line and "seed" in line
    assert not (tmp_path / "0").exists()


def test_a_sweep_directory_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path / "file" / "sweep", bowl, LR)
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: hydra.sweep.dir='{tmp_path / 'file' / 'sweep'}': cannot write")


def test_multi_objective_sweep_writes_the_pareto_front(tmp_path):
    sweep_in_process(tmp_path, two_objectives, "hydra/sweeper/sampler=nsgaii",
                     "hydra.sweeper.sampler.population_size=2", "hydra.sweeper.n_trials=4",
                     "hydra.sweeper.direction=[maximize,minimize]",
                     "hydra.sweeper.objectives=[val/acc,wall_seconds]", LR)
    table = rows(tmp_path)
    assert list(table[0])[:4] == ["number", "state", "value_val/acc", "value_wall_seconds"]
    assert len(table) == 4 and {r["state"] for r in table} == {"COMPLETE"}
    for r in table:
        assert float(r["value_wall_seconds"]) == pytest.approx(100 * float(r["optimizer.lr"]))
    front = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["solutions"]
    assert front and all(set(s) >= {"number", "params", "values"} and len(s["values"]) == 2 for s in front)
    assert load_study(tmp_path).trials[0].user_attrs["global_step"] == 7


def widen(cfg, trial) -> dict:
    """A custom search space: one more parameter suggested here, one derived override returned."""
    warmup = trial.suggest_int("schedule.warmup", 0, 10)
    return {"trainer.max_epochs": 1 + warmup // 5}


def test_custom_search_space_function_adds_params_and_overrides(tmp_path):
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=3", LR,
                     "hydra.sweeper.custom_search_space=tests.search.test_sweeper.widen")
    table = rows(tmp_path)
    assert list(table[0])[2:5] == ["value", "optimizer.lr", "schedule.warmup"]
    for r in table:
        overrides = task_overrides(tmp_path / r["number"])
        assert overrides["schedule.warmup"] == r["schedule.warmup"]
        assert overrides["trainer.max_epochs"] == str(1 + int(r["schedule.warmup"]) // 5)


def test_rerunning_a_sweep_resumes_it(tmp_path):
    args = ["hydra/sweeper/sampler=random", LR, "optimizer=choice(sgd,adam)"]
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=2", *args)
    first = rows(tmp_path)
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=2", *args)  # finished: nothing to run
    assert rows(tmp_path) == first
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=3", *args)  # one more, in a new directory
    table = rows(tmp_path)
    assert table[:2] == first and [r["number"] for r in table] == ["0", "1", "2"]
    assert table[2]["optimizer.lr"] not in {r["optimizer.lr"] for r in first}  # not a replay of the first


def test_grid_with_a_continuous_param_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, bowl, "hydra/sweeper/sampler=grid", LR, "optimizer=choice(sgd,adam)")
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("lightopt: config error: optimizer.lr='tag(log,interval(1e-4,1e-1))':")
    assert "choice" in line and "range" in line
    assert not (tmp_path / "0").exists()


@pytest.mark.parametrize("key,value,mentions", [
    ("hydra.sweeper.direction", "up", "minimize | maximize"),
    ("hydra.sweeper.diverged", "ignore", "fail | worst"),
    ("hydra.sweeper.max_failure_rate", "2", "[0, 1]"),
    ("hydra.sweeper.sampler._target_", "optuna.samplers.NoSuchSampler", "optuna.samplers.BaseSampler"),
    ("hydra.sweeper.pruner", "percentile", "Percentile must be between 0 and 100"),
    ("hydra.sweeper.objectives", "[val/acc]", "one name per direction"),
])
def test_bad_sweeper_config_is_one_clear_line(tmp_path, capsys, key, value, mentions):
    with pytest.raises(SystemExit) as exit_:
        extra = {"hydra.sweeper.objectives": "hydra.sweeper.direction=[maximize,minimize]",
                 "hydra.sweeper.pruner": "hydra.sweeper.pruner.percentile=150"}.get(key, "seed=0")
        first = f"hydra/sweeper/pruner={value}" if key == "hydra.sweeper.pruner" else f"{key}={value}"
        sweep_in_process(tmp_path, bowl, first, extra, LR)
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: {key}=") and mentions in line, line


def test_a_sweep_where_every_trial_fails_stops(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, out_of_memory, "hydra.sweeper.n_trials=20", LR)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "sweep stopped: 3 of 3 finished trials failed, more than max_failure_rate=0.5" in err
    assert "out of memory" in err
    assert [r["state"] for r in rows(tmp_path)] == ["FAIL"] * 3


SAMPLERS = {"grid": optuna.samplers.BruteForceSampler, "random": optuna.samplers.RandomSampler,
            "tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler, "cmaes": optuna.samplers.CmaEsSampler,
            "qmc": optuna.samplers.QMCSampler, "nsgaii": optuna.samplers.NSGAIISampler}
PRUNERS = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "percentile": optuna.pruners.PercentilePruner, "hyperband": optuna.pruners.HyperbandPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner, "patient": optuna.pruners.PatientPruner,
           "threshold": optuna.pruners.ThresholdPruner}


def test_every_shipped_sampler_and_pruner_config_builds():
    import warnings

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    for group, classes in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        for name, cls in classes.items():
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose("train", overrides=[f"hydra/sweeper/{group}={name}", "hydra.sweeper.seed=5"],
                              return_hydra_config=True)
            node = OmegaConf.to_container(cfg.hydra.sweeper[group], resolve=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                assert type(instantiate(node)) is cls, (group, name)
            assert group == "pruner" or node["seed"] == 5  # the sweep's seed is every sampler's default


# ------------------------------------------------------------------------------------------- judging results


def job(tmp_path: Path, results: dict | None, status=JobStatus.COMPLETED, value=None) -> JobReturn:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))
    ret = JobReturn(status=status, _return_value=value)
    ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    return ret


def result(status: str, value: float = 0.9) -> dict:
    return {"objective": "val/acc", "value": value, "direction": "maximize", "status": status,
            "metrics": {"val/acc": {"final": 0.8, "best": value}, "val/loss": {"final": 0.3, "best": 0.2}},
            "global_step": 40, "epochs": 2, "wall_seconds": 1.5}


@pytest.mark.parametrize("status,state", [("completed", "COMPLETE"), ("pruned", "PRUNED"), ("diverged", "FAIL"),
                                          ("failed", "FAIL"), ("interrupted", "FAIL")])
def test_results_status_decides_the_trial_state(tmp_path, status, state):
    outcome = judge(job(tmp_path, result(status)), None, ["maximize"], None)
    assert outcome.state.name == state
    assert outcome.values == ([0.9] if state == "COMPLETE" else None)
    assert outcome.attrs["global_step"] == 40 and outcome.attrs["status"] == status
    assert outcome.attrs["run_dir"] == str(tmp_path / "run")


def test_diverged_worst_objectives_and_failures(tmp_path):
    worst = judge(job(tmp_path, result("diverged", -math.inf)), None, ["maximize", "minimize"],
                  ["val/acc", "wall_seconds"], diverged="worst")
    assert worst.state.name == "COMPLETE" and worst.values == [-math.inf, math.inf]
    assert judge(job(tmp_path, result("diverged")), None, ["maximize"], None, "worst", -1.0).values == [-1.0]
    multi = judge(job(tmp_path, result("completed")), None, ["maximize", "minimize", "minimize"],
                  ["val/acc", "val/loss:final", "wall_seconds"])
    assert multi.values == [0.9, 0.3, 1.5]
    unknown = judge(job(tmp_path, result("completed")), None, ["maximize"], ["val/f1"])
    assert unknown.state.name == "FAIL" and "val/f1" in unknown.error
    # an exception in the job (out of memory here) fails the trial even when results.json says more
    oom = judge(job(tmp_path, None, JobStatus.FAILED, RuntimeError("CUDA out of memory")), None, ["maximize"], None)
    assert oom.state.name == "FAIL" and "out of memory" in oom.attrs["error"]
    assert judge(job(tmp_path, None, JobStatus.FAILED, optuna.TrialPruned()), None, ["maximize"], None).state.name \
        == "PRUNED"


def test_without_results_json_the_return_value_counts(tmp_path):
    (tmp_path / "run").mkdir()
    assert judge(job(tmp_path, None, value=0.5), None, ["minimize"], None).values == [0.5]
    assert judge(job(tmp_path, None, value=(1, 2)), None, ["minimize", "maximize"], None).values == [1.0, 2.0]
    assert judge(job(tmp_path, None, value="x"), None, ["minimize"], None).state.name == "FAIL"
    assert judge(job(tmp_path, None, value=0.5), None, ["minimize"], ["val/acc"]).state.name == "FAIL"


def test_storage_url_is_absolute_and_names_an_installed_driver():
    assert with_driver("postgresql://u:p@h/db").startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert with_driver("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert with_driver("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert with_driver("sqlite:///x.db") == f"sqlite:///{Path.cwd() / 'x.db'}"


def test_file_lock_tells_whether_another_sweep_process_is_alive(tmp_path):
    path = tmp_path / "optuna.db.lock"
    alone = FileLock(path)
    assert alone.alone
    alone.close()
    # another live sweep process holds byte 0 shared: this one is not alone, and its RUNNING trials are not stale
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)\nprint('locked', flush=True)\ntime.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = FileLock(path)
        assert not other.alone
        with other.reserving():  # reserving uses another byte: never blocked by live sweeps
            pass
        other.close()
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------- end to end


def test_tpe_sweep_end_to_end(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=3", LR,
                   "optimizer=choice(sgd,adam)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 3/3 (#2): COMPLETE, value" in proc.stdout + proc.stderr
    table = rows(sweep_dir)
    assert list(table[0]) == ["number", "state", "value", "optimizer.lr", "optimizer", "steps", "seconds",
                              "status", "run_dir"]
    assert [(r["number"], r["state"], r["steps"], r["status"]) for r in table] == [
        (str(i), "COMPLETE", "10", "completed") for i in range(3)]
    study = load_study(sweep_dir)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(r["value"]) for r in table) == study.best_value
    assert best["best_params"] == study.best_params and set(best["best_params"]) == {"optimizer.lr", "optimizer"}
    for r in table:
        run_dir = sweep_dir / r["number"]  # hydra.job.num = trial number
        assert r["run_dir"] == str(run_dir)
        res = json.loads((run_dir / "results.json").read_text())
        assert float(r["value"]) == res["value"]
        hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.job.num == int(r["number"])
        # the contract with the job: where its trial lives, in its run directory
        context = TrialContext.read(run_dir)
        assert (context.number, context.study_name) == (int(r["number"]), study.study_name)
        assert context.storage == f"sqlite:///{sweep_dir / 'optuna.db'}"
        assert context.run_dir == str(run_dir) and context.searched == ("optimizer.lr", "optimizer")
        assert "trial" not in hydra_cfg.sweeper  # no fake config keys
        assert task_overrides(run_dir)["optimizer"] == r["optimizer"]
    assert study.trials[1].user_attrs["wall_seconds"] > 0 and study.trials[1].user_attrs["global_step"] == 10


def test_grid_runs_every_combination_once_in_parallel(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/sampler=grid",
                   "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2", "optimizer=choice(sgd,adam)",
                   "schedule=choice(constant,cosine)",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = rows(sweep_dir)
    assert len(table) == 4 and {r["state"] for r in table} == {"COMPLETE"}
    assert {(r["optimizer"], r["schedule"]) for r in table} == {(o, s) for o in ("sgd", "adam")
                                                              for s in ("constant", "cosine")}
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert "capped at the grid size 4" in proc.stdout + proc.stderr


CONDITIONAL_CONFIG = """\
# @package _global_
# a hydra-optuna-sweeper style config: only the sweeper's name differs
defaults:
  - override /hydra/sweeper: lightopt
  - override /hydra/sweeper/sampler: grid
hydra:
  sweeper:
    direction: maximize
    study_name: conditional
    storage: null
    n_trials: 20
    n_jobs: 1
    max_failure_rate: 0.0
    params:
      optimizer: choice(sgd, momentum, adam)
      trainer.max_epochs: 1
    conditional:
      optimizer.momentum: {when: {optimizer: [momentum, nesterov]}, space: "choice(0.8, 0.9)"}
      optimizer.betas: {when: {optimizer: [adam, adamw]}, space: "choice([0.9,0.999],[0.8,0.99])"}
"""


def test_conditional_space_from_a_yaml_config(tmp_path):
    (tmp_path / "extra" / "experiment").mkdir(parents=True)
    (tmp_path / "extra" / "experiment" / "cond.yaml").write_text(CONDITIONAL_CONFIG)
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "--config-dir", str(tmp_path / "extra"), "experiment=cond", *QUICK, "trainer.max_epochs=1",
                   f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = rows(sweep_dir)
    assert len(table) == 5 and {r["state"] for r in table} == {"COMPLETE"}  # sgd, 2 x momentum, 2 x adam
    seen = set()
    for r in table:
        overrides = task_overrides(sweep_dir / r["number"])
        opt = overrides["optimizer"]
        assert ("optimizer.momentum" in overrides) == (opt == "momentum"), overrides
        assert ("optimizer.betas" in overrides) == (opt == "adam"), overrides
        resolved = OmegaConf.load(sweep_dir / r["number"] / ".hydra" / "config.yaml").optimizer
        if opt == "adam":
            assert "momentum" not in resolved
            assert list(resolved.betas) == json.loads(overrides["optimizer.betas"])
        seen.add(tuple(sorted(overrides.items())))
    assert len(seen) == 5
    assert load_study(sweep_dir).study_name == "conditional"


def test_failing_and_diverging_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/sampler=grid",
                   "hydra.sweeper.max_failure_rate=1.0", "optimizer=sgd", "optimizer.lr=choice(1e12,1e-3)",
                   "model._target_=choice(lightopt.run.models.MLP,no.such.Model)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = {(r["optimizer.lr"], r["model._target_"]): r for r in rows(sweep_dir)}
    assert len(table) == 4
    assert table[("0.001", "lightopt.run.models.MLP")]["state"] == "COMPLETE"
    assert table[("1000000000000.0", "lightopt.run.models.MLP")]["state"] == "FAIL"
    assert table[("1000000000000.0", "lightopt.run.models.MLP")]["status"] == "diverged"
    assert {table[(lr, "no.such.Model")]["state"] for lr in ("0.001", "1000000000000.0")} == {"FAIL"}
    errors = [t.user_attrs.get("error", "") for t in load_study(sweep_dir).trials]
    assert sum("no.such.Model" in e for e in errors) == 2


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    log = open(tmp_path / f"sweep-{uuid.uuid4().hex[:6]}.log", "w")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def interrupted_inside(cfg) -> float:
    """The second trial gets Ctrl-C where a library swallows it (as OmegaConf does while composing)."""
    if HydraConfig.get().job.num == 1:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal arrives during this
        except KeyboardInterrupt:
            raise ValueError("a library's own error instead of KeyboardInterrupt") from None
    return bowl(cfg)


def test_ctrl_c_stops_the_sweep_even_when_a_job_swallows_the_interrupt(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, interrupted_inside, "hydra.sweeper.n_trials=5", LR)
    assert exit_.value.code == 130
    table = rows(tmp_path)
    assert [r["state"] for r in table] == ["COMPLETE", "FAIL"]  # no trial started after the Ctrl-C
    assert table[1]["status"] == "interrupted"
    assert load_study(tmp_path).trials[1].user_attrs["error"] == "interrupted (Ctrl-C)"


def interrupted_mid_read(cfg) -> float:
    """The second trial gets Ctrl-C while it reads the study's database (an unfinished read: a SQLite lock)."""
    import sqlite3

    if HydraConfig.get().job.num == 1:
        db = sqlite3.connect(TrialContext.current().storage.removeprefix("sqlite:///"))
        cursor = db.execute("SELECT * FROM trials")
        cursor.fetchone()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    return bowl(cfg)


def test_ctrl_c_during_a_database_read_of_a_job_still_records_the_sweep(tmp_path):
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, interrupted_mid_read, "hydra.sweeper.n_trials=5", LR)
    assert exit_.value.code == 130
    assert time.monotonic() - start < 30  # not stuck waiting for the database's lock (60 s)
    assert [r["state"] for r in rows(tmp_path)] == ["COMPLETE", "FAIL"]
    assert load_study(tmp_path).trials[1].user_attrs["status"] == "interrupted"


def test_interrupted_and_killed_sweeps_resume_to_exactly_n_trials(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*SLOW, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=4", LR]
    # Ctrl-C during trial 1: finished trials kept, the running one told FAIL, outputs written, exit 130
    proc = start(tmp_path, *args)
    wait_for(sweep_dir / "1" / ".hydra" / "overrides.yaml", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    table = rows(sweep_dir)
    interrupted = len(table) - 1
    assert interrupted >= 1 and [r["state"] for r in table] == ["COMPLETE"] * interrupted + ["FAIL"]
    assert table[-1]["status"] == "interrupted"
    # SIGKILL during the next trial: nothing written; the next run marks it FAIL (no other sweep holds the lock)
    proc = start(tmp_path, *args)
    killed = interrupted + 1
    wait_for(sweep_dir / str(killed) / ".hydra" / "overrides.yaml", proc)
    proc.kill()
    proc.wait(timeout=30)
    done = run_cli(*args, "-m", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = rows(sweep_dir)
    assert [r["number"] for r in table] == ["0", "1", "2", "3"]  # exactly n_trials, each number once
    assert [r["state"] for r in table] == ["FAIL" if i in (interrupted, killed) else "COMPLETE" for i in range(4)]
    assert len({r["run_dir"] for r in table}) == 4
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert load_study(sweep_dir).trials[killed].user_attrs["error"] == "its sweep process died"


POSTGRES = os.environ.get("LIGHTOPT_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES, reason="set LIGHTOPT_TEST_POSTGRES_URL to a PostgreSQL database to run it")
def test_two_processes_share_a_postgres_study_and_run_exactly_n_trials(tmp_path):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    n_trials = 6
    procs = [start(tmp_path, *QUICK, "trainer.max_epochs=4", f"hydra.sweep.dir={tmp_path / d}", LR,
                   f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={POSTGRES}",
                   f"hydra.sweeper.study_name={name}") for d in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    storage = with_driver(POSTGRES)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert sorted(t.number for t in trials) == list(range(n_trials))
        assert {t.state.name for t in trials} == {"COMPLETE"}
        dirs = [p.name for d in ("a", "b") for p in (tmp_path / d).iterdir() if p.name.isdigit()]
        assert sorted(dirs, key=int) == [str(i) for i in range(n_trials)]  # each trial run once, by one of them
        assert {t.user_attrs["run_dir"] for t in trials} == {str(tmp_path / d / n) for d in ("a", "b")
                                                             for n in dirs if (tmp_path / d / n).exists()}
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def _open_in_schema(url: str) -> str:
    from lightopt.storage import open_storage

    try:
        open_storage(url).engine.dispose()
        return "ok"
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {err}"


@pytest.mark.skipif(not POSTGRES, reason="set LIGHTOPT_TEST_POSTGRES_URL to a PostgreSQL database to run it")
def test_processes_starting_together_on_a_fresh_postgres_database_all_open_it():
    # every sweep worker of a new database creates Optuna's tables on start: they must not collide
    import multiprocessing

    import sqlalchemy

    schema = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(with_driver(POSTGRES))
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    url = with_driver(POSTGRES) + f"?options=-csearch_path%3D{schema}"
    try:
        with multiprocessing.get_context("spawn").Pool(6) as pool:
            outcomes = pool.map(_open_in_schema, [url] * 6)
        assert outcomes == ["ok"] * 6
        with admin.connect() as conn:
            tables = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalar()
        assert tables > 5  # the tables are in the fresh schema, made once
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_a_sweep_whose_every_trial_failed_exits_1_even_below_the_failure_minimum(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # 2 trials: fewer than failure_rate_min_trials (3)
        sweep_in_process(tmp_path, out_of_memory, "hydra.sweeper.n_trials=2", LR)
    assert exit_.value.code == 1
    assert "sweep ended with no completed trial (2 failed)" in capsys.readouterr().err
    assert [r["state"] for r in rows(tmp_path)] == ["FAIL", "FAIL"]


def test_sigterm_stops_a_sweep_like_ctrl_c_with_exit_143(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = start(tmp_path, *QUICK, "trainer.max_epochs=100", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.n_trials=4",
                 LR)
    wait_for(sweep_dir / "0" / "checkpoints" / "last.ckpt", proc)  # trial 0 is training (written every epoch)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    table = rows(sweep_dir)
    assert [(r["state"], r["status"]) for r in table] == [("FAIL", "interrupted")]
    assert json.loads((sweep_dir / "0" / "results.json").read_text())["status"] == "interrupted"
    assert load_study(sweep_dir).trials[0].user_attrs["error"] == "interrupted (SIGTERM)"


def test_a_sweep_directory_whose_database_was_emptied_is_refused_and_left_as_it_is(tmp_path, capsys):
    sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=2", LR)
    table = (tmp_path / "trials.csv").read_text()
    (tmp_path / "optuna.db").write_bytes(b"")  # a 0-byte database: Optuna would make a fresh study of it
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path, bowl, "hydra.sweeper.n_trials=3", LR)
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: hydra.sweep.dir='{tmp_path}'")
    assert "run directories of trials 0, 1" in line and "a new directory" in line
    assert (tmp_path / "trials.csv").read_text() == table  # the earlier outputs are untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["0", "1"]
