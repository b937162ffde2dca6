"""The sweep's W&B summary run (:mod:`lightopt.search.wandb_summary`): which configs log to W&B, what a built
report publishes (one run per study), and the run itself, offline and read back with the wandb CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightopt.search.report import make_report
from lightopt.search.wandb_summary import SUMMARY_RUN_ID_ATTR, log_sweep_summary, log_to_wandb, wandb_settings
from tests.helpers import LR, sweep_in_process, two_objectives

WANDB_CLI = Path(sys.executable).parent / "wandb"


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))


def inspect(run_file: Path, *flags: str) -> str:
    return subprocess.run([str(WANDB_CLI), "leet", "inspect", *flags, str(run_file)], capture_output=True,
                          text=True, check=True).stdout


def test_wandb_is_used_when_a_config_logs_to_it_and_is_not_disabled():
    wandb = {"_target_": "lightopt.run.tracking.wandb_logger", "project": "p", "mode": "offline"}
    csv_only = {"logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}}
    assert wandb_settings([csv_only, {"logger": None}]) is None
    assert wandb_settings([{"logger": {"wandb": {**wandb, "mode": "disabled"}}}]) is None
    assert wandb_settings([csv_only, {"logger": {"wandb": wandb}}])["project"] == "p"


def test_wandb_settings_read_omegaconf_configs():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "p2", "logger": {"wandb": {"_target_": "lightopt.run.tracking.wandb_logger",
                                                               "project": "${name}", "offline": True}}})
    assert wandb_settings([cfg]) == {"_target_": "lightopt.run.tracking.wandb_logger", "project": "p2",
                                     "offline": True, "mode": "offline"}


def test_a_report_is_published_as_one_run_per_study(tmp_path, monkeypatch):
    """Two objectives: value columns named after them, the Pareto front in the summary, the run id kept."""
    sweep_in_process(tmp_path, two_objectives, "hydra/sweeper/sampler=nsgaii",
                     "hydra.sweeper.sampler.population_size=2", "hydra.sweeper.n_trials=3",
                     "hydra.sweeper.direction=[maximize,minimize]",
                     "hydra.sweeper.objectives=[val/acc,wall_seconds]", LR, "logger=csv", "hydra.sweeper.report=false")
    report = make_report(tmp_path)
    calls = []
    monkeypatch.setattr("lightopt.search.wandb_summary.log_sweep_summary", lambda *a, **kw: calls.append((a, kw)))
    log_to_wandb(report, {"project": "p", "mode": "offline", "tags": ["x"]})
    log_to_wandb(make_report(tmp_path), {"project": "p", "mode": "offline"})  # a rebuilt report
    (args, first), (_, second) = calls
    assert args == (report.info.sweep_dir,) and first["group"] == report.info.study_name
    assert first["columns"] == ["number", "state", "value_val/acc", "value_wall_seconds", "optimizer.lr",
                                "steps", "seconds", "status"]
    assert [r[0] for r in first["rows"]] == [0, 1, 2] and {r[1] for r in first["rows"]} == {"COMPLETE"}
    assert first["rows"][0][5] == 7  # global_step from results.json
    summary = first["summary"]
    assert summary["objectives"] == ["val/acc", "wall_seconds"] and summary["states"] == {"COMPLETE": 3}
    assert {t["number"] for t in summary["pareto_front"]} == {t.number for t in report.study.best_trials}
    assert first["project"] == "p" and first["tags"] == ["x"] and set(first["images"]) >= {"history", "pareto_front"}
    assert first["run_id"] == second["run_id"] == report.study.user_attrs[SUMMARY_RUN_ID_ATTR]


@pytest.mark.skipif(not WANDB_CLI.exists(), reason="wandb CLI missing")
def test_sweep_summary_run_holds_the_trials_table_and_pictures(no_credentials, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "history.png")
    plt.close(fig)
    table = {"columns": ["number", "state", "value", "optimizer"],
             "rows": [[0, "COMPLETE", 0.5, "sgd"], [1, "FAIL", None, "adam"]]}
    assert log_sweep_summary(tmp_path / "off", "study-1", **table, mode="disabled") is None
    assert not (tmp_path / "off").exists()

    run_dir = log_sweep_summary(tmp_path, "study-1", **table, images={"history": tmp_path / "history.png"},
                                summary={"best_value": 0.5, "best_params": {"optimizer": "sgd"},
                                         "storage": "postgresql://u:pw@h/db"})
    assert "wandb sync" in capsys.readouterr().out  # offline without credentials, never a prompt
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    assert (run_dir / "files" / "requirements.txt").is_file()  # the sweep's environment, once for its trials
    (run_file,) = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    record = json.loads(inspect(run_file, "--summary", "--json"))
    assert record["state"] == "finished" and record["name"] == "study-1-summary"
    summary = record["summary"]
    assert summary["best_value"] == 0.5 and summary["best_params"] == {"optimizer": "sgd"}
    assert summary["storage"] == "postgresql://u:***@h/db"
    assert summary["trials"]["_type"] == "table-file" and summary["trials"]["nrows"] == 2
    assert summary["report/history"]["_type"] == "image-file"
    out = inspect(run_file, "--json")
    run = next(json.loads(line)["run"] for line in out.splitlines() if '"type":"run"' in line.replace(" ", ""))
    assert run["run_group"] == "study-1" and run["job_type"] == "sweep-summary"
