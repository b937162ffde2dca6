"""Tracking helpers: W&B mode without prompts, run names and tags, redaction, an offline run read back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightopt.contract import TrialContext
from lightopt.errors import ConfigError
from lightopt.run.tracking import (
    has_wandb_credentials,
    redact,
    requirements_wanted,
    resolve_mode,
    run_name,
    run_tags,
    wandb_logger,
)


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))


def test_auto_mode_is_offline_without_credentials(no_credentials):
    assert not has_wandb_credentials()
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online"


def test_auto_mode_is_online_with_a_key_or_netrc(no_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode("auto") == "online"


def test_bad_mode_names_the_key():
    with pytest.raises(ConfigError, match="logger.wandb.mode='cloud'.*offline"):
        resolve_mode("cloud")


def test_requirements_are_saved_by_single_runs_not_by_each_sweep_trial():
    assert requirements_wanted("auto", in_sweep=False) and not requirements_wanted(False, in_sweep=False)
    assert not requirements_wanted("auto", in_sweep=True) and requirements_wanted(True, in_sweep=True)
    with pytest.raises(ConfigError, match="logger.wandb.save_requirements='yes'.*auto . true . false"):
        requirements_wanted("yes", in_sweep=False)


def test_a_sweep_trials_wandb_run_has_no_requirements_file(no_credentials, tmp_path, monkeypatch):
    trial = TrialContext("sqlite:///s.db", "study", 3, None)
    monkeypatch.setattr(TrialContext, "current", classmethod(lambda cls: trial))
    logger = wandb_logger(tmp_path, name="trial")
    logger.experiment.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert not (run_dir / "files" / "requirements.txt").exists()


def test_redact_hides_passwords_and_keys():
    cfg = {"storage": "postgresql://me:s3cret@db:5432/x", "wandb": {"api_key": "abc", "project": "p"},
           "list": ["redis://u:pw@h", 3], "token": None}
    out = redact(cfg)
    assert out["storage"] == "postgresql://me:***@db:5432/x"
    assert out["wandb"] == {"api_key": "***", "project": "p"}
    assert out["list"] == ["redis://u:***@h", 3]
    assert out["token"] is None
    assert cfg["wandb"]["api_key"] == "abc"  # the original is untouched


def test_run_name_and_tags_from_overrides():
    choices = {"optimizer": "adamw", "schedule": "cosine", "model": "mlp", "data": "digits"}
    overrides = ["optimizer=adamw", "schedule=cosine", "optimizer.lr=3e-3", "hydra.sweeper.trial=4"]
    assert run_name(overrides, choices) == "adamw-cosine-lr=3e-3"
    assert run_tags(choices) == ["optimizer:adamw", "schedule:cosine", "model:mlp", "data:digits"]
    assert run_name([], {}) == "run"
    # a sweep trial: only its searched keys, numbers shortened
    trial = ["trainer.max_epochs=3", "logger=wandb", "optimizer.lr=0.004430375245218269", "model.width=64"]
    assert run_name(trial, choices, ["optimizer.lr", "model.width"]) == "adamw-cosine-lr=0.00443-width=64"


@pytest.mark.skipif(shutil.which("wandb") is None and not (Path(sys.executable).parent / "wandb").exists(),
                    reason="wandb CLI missing")
def test_offline_run_lands_in_save_dir_and_reads_back(no_credentials, tmp_path, capsys):
    logger = wandb_logger(tmp_path, name="probe", tags=["extra"])
    logger.log_hyperparams(redact({"optimizer": {"lr": 0.1}, "storage": "postgresql://u:pw@h/db"}))
    logger.log_metrics({"train/lr": 0.1}, step=0)
    logger.experiment.summary["status"] = "completed"
    logger.experiment.finish()
    assert "wandb sync" in capsys.readouterr().out
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    assert (runs[0].parent / "files" / "requirements.txt").is_file()  # a single run records its packages
    cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(cli), "leet", "inspect", "--summary", "--json", str(runs[0])],
                         capture_output=True, text=True, check=True).stdout
    record = json.loads(out)
    assert record["name"] == "probe" and "extra" in record["tags"]
    assert record["config"]["optimizer"] == {"lr": 0.1}
    assert record["config"]["storage"] == "postgresql://u:***@h/db"
    assert record["summary"]["status"] == "completed" and record["summary"]["train/lr"] == 0.1


def inspect(run_dir: Path) -> dict:
    runs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, f"no offline W&B run under {run_dir}"
    cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(cli), "leet", "inspect", "--summary", "--json", str(runs[-1])],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_training_run_logs_config_metrics_and_summary_to_wandb(no_credentials, tmp_path):
    from lightopt.run.training import run
    from tests.helpers import QUICK, compose_cfg

    run(compose_cfg(*QUICK, "logger=[csv,wandb]", "optimizer=adamw", "optimizer.lr=0.002",
                    "logger.wandb.tags=[probe]"), tmp_path)
    record = inspect(tmp_path)
    assert record["state"] == "finished"
    assert record["config"]["optimizer"]["lr"] == 0.002  # nested, so W&B can group by optimizer.lr
    assert record["config"]["schedule"]["name"] == "cosine"
    summary = record["summary"]
    assert summary["status"] == "completed" and summary["objective"] == "val/acc"
    results = json.loads((tmp_path / "results.json").read_text())
    assert summary["objective_value"] == pytest.approx(results["value"])
    assert "train/lr" in summary and "val/acc" in summary
    assert "probe" in record["tags"]
    assert (tmp_path / "metrics.csv").exists()  # several loggers at once


def test_resumed_run_continues_the_same_wandb_run(no_credentials, tmp_path):
    from lightopt.run.training import run
    from tests.helpers import QUICK, compose_cfg

    first, second = tmp_path / "first", tmp_path / "second"
    run(compose_cfg(*QUICK, "logger=wandb", "schedule.total_steps=20"), first)
    run(compose_cfg(*QUICK, "logger=wandb", "trainer.max_epochs=4", "schedule.total_steps=20",
                    f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"), second)
    assert inspect(first)["run_id"] == inspect(second)["run_id"]


def test_tensorboard_and_csv_together(tmp_path):
    from lightopt.run.training import run
    from tests.helpers import QUICK, compose_cfg

    run(compose_cfg(*QUICK, "logger=[csv,tensorboard]"), tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "metrics.csv").exists()
