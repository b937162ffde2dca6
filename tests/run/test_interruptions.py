"""A single run stopped by Ctrl-C or SIGTERM (what SLURM and Kubernetes send) is recorded, resumable, non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.helpers import QUICK, ROOT, compose_cfg, run_cli, wait_for

LONG = [*QUICK, "trainer.max_epochs=200"]  # far longer than the test waits


def start(tmp_path: Path, run_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_records_itself_and_resumes(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, run_dir, *LONG)
    wait_for(run_dir / "checkpoints" / "last.ckpt", proc)  # written after every epoch
    time.sleep(1.0)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code, (tmp_path / "run.log").read_text()[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert 5 <= results["global_step"] < 1000
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == results["global_step"]  # saved at the step it reached
    assert "resume with: ckpt_path=" in (tmp_path / "run.log").read_text()

    epochs = results["global_step"] // 5 + 2  # a little further than it got
    resumed = run_cli(*QUICK, f"trainer.max_epochs={epochs}", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads((tmp_path / "resumed" / "results.json").read_text())
    # a signal landing between an optimizer step and Lightning's count of it replays that one step on resume
    assert done["status"] == "completed" and done["global_step"] - 5 * epochs in (0, 1)


class InterruptAtEpochStart(Callback):
    """Ctrl-C as epoch ``epoch`` starts: between two epochs, after the last one's validation."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_run_interrupted_between_epochs_resumes_to_every_epoch_asked(tmp_path, monkeypatch):
    from lightopt.run import training

    callbacks = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda *a: [*callbacks(*a), InterruptAtEpochStart(3)])
    with pytest.raises(SystemExit) as exit_:
        training.run(compose_cfg(*QUICK, "logger=none", "trainer.max_epochs=10"), tmp_path / "run")
    assert exit_.value.code == 130
    assert json.loads((tmp_path / "run" / "results.json").read_text())["global_step"] == 15  # 3 epochs of 5
    monkeypatch.setattr(training, "_callbacks", callbacks)
    training.run(compose_cfg(*QUICK, "logger=none", "trainer.max_epochs=5",
                             f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"), tmp_path / "resumed")
    done = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert (done["status"], done["global_step"], done["epochs"]) == ("completed", 25, 5)
