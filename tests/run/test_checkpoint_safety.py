"""A checkpoint given as ckpt_path is only ever loaded as plain tensors and values (a pickle never runs code), and
one that does not fit the run (its model, its optimizer) is refused before training; a checkpoint the run cannot
write fails the run."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lightopt.errors import ConfigError
from lightopt.run.training import run
from tests.helpers import QUICK, compose_cfg, run_cli


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_whose_pickle_runs_code_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "lightopt_wandb_run_id": RunsCode(str(marker))}, evil)
    # W&B among the loggers: the run id of a resumed run is read from the checkpoint first
    proc = run_cli(*QUICK, "logger=[csv,wandb]", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not marker.exists()
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: ckpt_path='{evil}'") and "weights_only=True" in line
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_missing_or_damaged_ckpt_path_is_a_config_error(tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"not a checkpoint")
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    for path, problem in ((tmp_path / "missing.ckpt", "no such file"), (tmp_path, "a directory"),
                          (damaged, "does not load"), (plain, "not a Lightning checkpoint")):
        proc = run_cli(*QUICK, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"lightopt: config error: ckpt_path='{path}'") and problem in line, line


@pytest.fixture(scope="module")
def adam_checkpoint(tmp_path_factory):
    """last.ckpt of a short run: Adam, no weight decay (one param group), an MLP of width 32."""
    tmp_path = tmp_path_factory.mktemp("adam")
    first = run_cli(*QUICK, "model.width=32", f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    return tmp_path / "first" / "checkpoints" / "last.ckpt"


def _refusal(tmp_path, ckpt, *overrides: str) -> str:
    proc = run_cli(*QUICK, "model.width=32", *overrides, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "results.json").exists()
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: ckpt_path='{ckpt}'"), line
    return line


def test_a_checkpoint_of_another_model_is_refused_before_training(tmp_path, adam_checkpoint):
    line = _refusal(tmp_path, adam_checkpoint, "model.width=64")
    assert "do not fit this model" in line
    assert "5 of another shape (model.0.bias is [32] there, [64] here)" in line, line


def test_a_checkpoint_of_another_optimizer_is_refused_before_training(tmp_path, adam_checkpoint):
    # torch would load Adam's param groups into SGD and fail at the first step with KeyError: 'momentum'
    line = _refusal(tmp_path, adam_checkpoint, "optimizer=momentum")
    assert "another optimizer's: it lacks dampening, momentum, nesterov" in line and "(SGD, 1 param group)" in line


def test_a_checkpoint_with_other_param_groups_is_refused_before_training(tmp_path, adam_checkpoint):
    # weight decay splits the parameters into decayed weights and undecayed biases
    line = _refusal(tmp_path, adam_checkpoint, "regularization=l2")
    assert "param groups of [6] parameters, this run's [3, 3]" in line, line


def test_a_weights_only_checkpoint_cannot_resume(tmp_path, adam_checkpoint):
    checkpoint = torch.load(adam_checkpoint, weights_only=True)
    weights = tmp_path / "weights.ckpt"
    torch.save({k: v for k, v in checkpoint.items() if k != "optimizer_states"}, weights)
    assert "no optimizer state" in _refusal(tmp_path, weights)


def test_a_checkpoint_that_is_not_written_fails_the_run(tmp_path, monkeypatch):
    # Lightning's own save ignores a PermissionError (a read-only or full checkpoints/): the run must not
    # report a best checkpoint that is not there
    from fsspec.implementations.local import LocalFileSystem

    opened = LocalFileSystem._open

    def refuse_checkpoints(self, path, mode="rb", *args, **kwargs):
        if str(path).endswith(".ckpt") and "w" in mode:
            raise PermissionError(13, "Permission denied", str(path))
        return opened(self, path, mode, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", refuse_checkpoints)
    with pytest.raises(OSError, match="checkpoint not written: .*last.ckpt"):
        run(compose_cfg(*QUICK, "logger=none"), tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["status"] == "failed" and result["best_checkpoint"] is None
    assert "checkpoint not written" in result["error"]


def test_a_checkpoints_path_that_is_not_a_directory_is_refused_before_training(tmp_path):
    (tmp_path / "checkpoints").write_text("")
    with pytest.raises(ConfigError, match=r"checkpoint=.*checkpoints'.*cannot write there.*checkpoint.enabled=false"):
        run(compose_cfg(*QUICK, "logger=none"), tmp_path)
    assert not (tmp_path / "results.json").exists()
