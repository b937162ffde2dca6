"""The data's task decides the objective, its direction and the loss when the config leaves them open."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lightopt.errors import ConfigError
from lightopt.run.task import objective_of, resolve
from tests.helpers import QUICK, bowl, compose_cfg, load_study, sweep_in_process, train_in_process


@pytest.mark.parametrize("overrides,metric,direction,loss", [
    ([], "val/acc", "maximize", "torch.nn.CrossEntropyLoss"),
    (["data=regression", "model=linear"], "val/loss", "minimize", "torch.nn.MSELoss"),
    (["experiment=gpt"], "val/loss", "minimize", "torch.nn.CrossEntropyLoss"),
    (["data=regression", "model=linear", "loss=huber"], "val/loss", "minimize", "torch.nn.HuberLoss"),
    (["objective.metric=val/loss"], "val/loss", "minimize", "torch.nn.CrossEntropyLoss"),
])
def test_open_settings_follow_the_task_and_explicit_ones_win(overrides, metric, direction, loss):
    cfg = resolve(compose_cfg(*overrides))
    assert (cfg.objective.metric, cfg.objective.direction, cfg.loss._target_) == (metric, direction, loss)


def test_a_regression_run_works_without_an_experiment_preset(tmp_path):
    # what a newcomer tries first: the regression data and the linear model, nothing else
    run_dir = tmp_path / "run"
    assert train_in_process(*QUICK, "data=regression", "model=linear", f"hydra.run.dir={run_dir}") == 0
    result = json.loads((run_dir / "results.json").read_text())
    assert (result["objective"], result["direction"], result["status"]) == ("val/loss", "minimize", "completed")
    assert result["value"] > 0  # a mean squared error, not a cross-entropy over one output


@pytest.mark.parametrize("overrides,line", [
    (["objective.metric=val/loss", "objective.direction=maximize"],
     "objective.direction='maximize': a loss is better when lower"),
    (["data=regression", "model=linear", "loss=cross_entropy"],
     "loss='torch.nn.CrossEntropyLoss': cross-entropy over a single output is always 0"),
])
def test_settings_that_make_no_sense_are_refused_before_training(tmp_path, capsys, overrides, line):
    run_dir = tmp_path / "run"
    assert train_in_process(*QUICK, *overrides, f"hydra.run.dir={run_dir}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"lightopt: config error: {line}")
    assert not (run_dir / "results.json").exists()


def test_a_data_module_without_a_task_needs_an_explicit_objective():
    cfg = OmegaConf.create({"data": {"_target_": "collections.OrderedDict"},
                            "objective": {"metric": None, "direction": None}})
    with pytest.raises(ConfigError, match=r"objective.metric=None: the data module has no `task` attribute"):
        objective_of(cfg)
    cfg.objective.metric = "val/f1"
    assert objective_of(cfg) == ("val/f1", "maximize")


def test_a_sweep_takes_its_direction_from_the_task(tmp_path):
    sweep_in_process(tmp_path, bowl, "data=regression", "model=linear", "optimizer.lr=interval(0.001,0.1)",
                     "hydra.sweeper.n_trials=1")
    assert [d.name for d in load_study(tmp_path).directions] == ["MINIMIZE"]
