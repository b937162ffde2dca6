"""Pruning sweep trials: a run re-attaches to its Optuna trial from its trial context and stops when pruned.

The sweeper's side is emulated: a real SQLite study, a trial asked from it, and the ``trial.json`` the sweeper
writes into each job's run directory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lightopt.contract import TrialContext
from lightopt.errors import ConfigError
from lightopt.run.pruning import OptunaPruning, attach, build_pruner
from lightopt.run.training import run
from tests.helpers import CONF, QUICK, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 3 epochs of 5 steps: validations (and reports) at global steps 5, 10 and 15
SHORT = [*QUICK, "trainer.max_epochs=3", "checkpoint.enabled=false"]


MEDIAN_CFG = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0}


@pytest.fixture
def hydra_job():
    """Compose ``train.yaml`` as a job and make its ``hydra`` node current, as Hydra does for a job."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
        return task

    yield make
    HydraConfig.instance().cfg = None


def as_trial(run_dir: Path, storage: str, study: str, number: int, pruner: dict | None = MEDIAN_CFG) -> Path:
    """Make ``run_dir`` the run directory of a sweep trial, as the sweeper does before it launches the job."""
    TrialContext(storage, study, number, pruner, run_dir=str(run_dir)).write(run_dir)
    return run_dir


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def test_bad_trial_is_pruned_and_good_ones_complete(tmp_path, hydra_job):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")

    def trial_run(name: str, *overrides: str) -> tuple[int, dict]:
        number = study.ask().number
        out = as_trial(tmp_path / name, storage, "s", number)
        run(hydra_job(*SHORT, *overrides), out)
        res = results(out)
        # what the sweeper does with results.json
        state = optuna.trial.TrialState.PRUNED if res["status"] == "pruned" else optuna.trial.TrialState.COMPLETE
        study.tell(number, None if state == optuna.trial.TrialState.PRUNED else res["value"], state=state)
        return number, res

    good = [trial_run(f"good{i}", f"seed={i}", "optimizer.lr=1.0e-2") for i in range(2)]
    for number, res in good:
        assert res["status"] == "completed" and res["trial"] == number
        assert res["global_step"] == 15
        frozen = study.trials[number]
        # each validation at the 0-based index of its last optimizer step, as metrics.csv has it
        assert sorted(frozen.intermediate_values) == [4, 9, 14]
        assert frozen.intermediate_values[14] == pytest.approx(res["metrics"]["val/acc"]["final"])
        assert res["value"] == res["metrics"]["val/acc"]["best"]  # completed runs: objective as without a sweep

    number, bad = trial_run("bad", "optimizer=sgd", "optimizer.lr=1.0e-7", "schedule=constant")
    assert bad["status"] == "pruned" and bad["trial"] == number
    assert bad["global_step"] < 15  # stopped at the first validation the pruner judged
    frozen = study.trials[number]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values
    last_step = max(frozen.intermediate_values)
    assert last_step == bad["global_step"] - 1  # the index of the step it ended at; global_step counts them
    assert bad["value"] == pytest.approx(frozen.intermediate_values[last_step])  # the last reported value
    assert bad["value"] < min(res["value"] for _, res in good)


def test_a_job_in_its_own_process_reports_to_the_shared_storage(tmp_path):
    # as with the joblib launcher: the job shares nothing with the sweeper but the storage URL
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    number = study.ask().number
    run_dir = as_trial(tmp_path / "run", storage, "s", number, pruner=None)
    proc = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = results(run_dir)
    assert res["status"] == "completed" and res["trial"] == number
    assert optuna.load_study(study_name="s", storage=storage).trials[number].intermediate_values.keys() == {4, 9}


def test_no_trial_outside_a_sweep(tmp_path, hydra_job):
    assert not HydraConfig.initialized() and TrialContext.current() is None  # no Hydra at all
    cfg = hydra_job(*QUICK)  # a Hydra job whose run directory holds no trial.json
    assert TrialContext.current() is None
    run(cfg, tmp_path)
    res = results(tmp_path)
    assert res["status"] == "completed" and res["trial"] is None


def test_attach_reads_only_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="minimize")
    study.ask()
    number = study.ask().number
    trial = attach(TrialContext(storage, "s", number, {"_target_": "optuna.pruners.MedianPruner"}))
    assert trial.number == number
    assert isinstance(trial.study.pruner, optuna.pruners.MedianPruner)
    trial.report(0.5, step=3)  # lands in the shared storage, where the sweeper sees it
    assert optuna.load_study(study_name="s", storage=storage).trials[number].intermediate_values == {3: 0.5}
    with pytest.raises(ConfigError, match="number=7.*no such trial"):
        attach(TrialContext(storage, "s", 7))


def test_multi_objective_studies_are_not_pruned(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="mo", directions=["maximize", "minimize"])
    number = study.ask().number
    assert attach(TrialContext(storage, "mo", number, None)) is None


@pytest.mark.parametrize("cfg", [None, "none", "null"])
def test_no_pruner_never_prunes(cfg):
    assert isinstance(build_pruner(cfg), optuna.pruners.NopPruner)


@pytest.mark.parametrize("cfg", ["median", {"n_startup_trials": 2}, {"_target_": "collections.OrderedDict"}])
def test_bad_pruner_config_is_a_config_error(cfg):
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner=.*allowed: null, none, or an Optuna pruner"):
        build_pruner(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg)


def test_direction_must_match_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="minimize")
    trial = attach(TrialContext(storage, "s", study.ask().number))
    with pytest.raises(ConfigError, match="OptunaPruning.mode='maximize'.*minimize"):
        OptunaPruning("val/acc", "max", trial=trial)


class FakeTrial:
    """Records reports; prunes when told to."""

    def __init__(self, prune: bool) -> None:
        self.prune, self.reports, self.number = prune, [], 0
        self.study = SimpleNamespace(direction=optuna.study.StudyDirection.MAXIMIZE)

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune


def fake_trainer(rank: int, rank0_decision: bool | None = None, sanity: bool = False) -> SimpleNamespace:
    """A trainer on ``rank`` whose strategy broadcasts rank 0's decision (``rank0_decision``) to every rank."""

    def broadcast(obj, src=0):
        return obj if rank0_decision is None else rank0_decision

    return SimpleNamespace(
        is_global_zero=rank == 0, sanity_checking=sanity, global_step=20, should_stop=False,
        callback_metrics={"val/acc": 0.25}, strategy=SimpleNamespace(broadcast=broadcast),
    )


def test_rank_zero_reports_and_its_decision_stops_every_rank():
    trial = FakeTrial(prune=True)
    rank0, rank1 = OptunaPruning("val/acc", "maximize", trial=trial), OptunaPruning("val/acc", "maximize", trial=trial)
    t0 = fake_trainer(0)
    rank0.on_validation_end(t0, None)
    assert trial.reports == [(19, 0.25)]  # after 20 steps: the 20th step's index, as in metrics.csv
    assert t0.should_stop and rank0.pruned and (rank0.last_value, rank0.last_step) == (0.25, 19)
    t1 = fake_trainer(1, rank0_decision=True)
    rank1.on_validation_end(t1, None)
    assert trial.reports == [(19, 0.25)]  # rank 1 never talks to the storage
    assert t1.should_stop and rank1.pruned


def test_nothing_is_reported_during_the_sanity_check_or_for_a_nonfinite_value():
    trial = FakeTrial(prune=True)
    cb = OptunaPruning("val/acc", "maximize", trial=trial)
    cb.on_validation_end(fake_trainer(0, sanity=True), None)
    nan = fake_trainer(0)
    nan.callback_metrics["val/acc"] = float("nan")
    cb.on_validation_end(nan, None)
    assert trial.reports == [] and not cb.pruned and not nan.should_stop
