"""A checkpoint given as ckpt_path is only ever loaded as plain tensors and values: a pickle never runs code."""

from __future__ import annotations

import os

import torch

from tests.helpers import QUICK, run_cli


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


def test_a_checkpoint_of_another_model_is_refused_before_training(tmp_path):
    first = run_cli(*QUICK, "model.width=32", f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    proc = run_cli(*QUICK, "model.width=64", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'other'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: ckpt_path='{ckpt}'") and "do not fit this model" in line
    assert "5 of another shape (model.0.bias is [32] there, [64] here)" in line, line
