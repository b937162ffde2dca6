"""A storage password given on the command line is in no file of the sweep: not multirun.yaml, not a job's
Hydra records, not trial.json, not the W&B offline runs (whose recorded command line included it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import LR, QUICK, run_cli

POSTGRES = os.environ.get("LIGHTOPT_TEST_POSTGRES_URL")


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_password_for_a_storage_that_cannot_be_reached_is_written_nowhere(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, LR, f"hydra.sweep.dir={sweep_dir}",
                   "hydra.sweeper.storage=postgresql://someone:Pw4Secret@127.0.0.1:9/db", cwd=tmp_path)
    assert proc.returncode == 2
    assert "someone:***@127.0.0.1:9" in proc.stderr and "Pw4Secret" not in proc.stderr + proc.stdout
    assert (sweep_dir / "multirun.yaml").is_file()
    assert files_holding(tmp_path, "Pw4Secret") == []


@pytest.mark.skipif(POSTGRES is None, reason="set LIGHTOPT_TEST_POSTGRES_URL to a PostgreSQL database")
def test_a_sweep_on_a_password_protected_storage_keeps_the_password_off_disk(tmp_path):
    url = make_url(POSTGRES)
    secret = f"{url.username}:{url.password}@"  # the password as a URL writes it
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, "trainer.max_epochs=1", "logger=[csv,wandb]", LR, "hydra.sweeper.n_trials=2",
                   f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage={POSTGRES}",
                   f"hydra.sweeper.study_name=secrets-{os.getpid()}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep_dir / "0" / "results.json").is_file() and list(sweep_dir.rglob("*.wandb"))  # the trials ran
    assert list((sweep_dir / "1" / "wandb").iterdir())  # ... and logged to W&B offline
    assert files_holding(tmp_path, secret) == []
    assert f"{url.username}:***@" in (sweep_dir / "multirun.yaml").read_text()
