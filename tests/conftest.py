"""Shared test helpers: compose the real Hydra config, run train.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]

if "PYTEST_XDIST_WORKER" in os.environ:
    # one process per core already: torch's intra-op threads (and those of the runs the tests start, which
    # inherit OMP_NUM_THREADS) would only fight over the cores and make small models many times slower
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
CONF = ROOT / "conf"

# Small, quiet training: a handful of steps instead of the full default run.
QUICK = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "logger=csv",
]


def compose_cfg(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config ``python train.py OVERRIDES`` would see (without the ``hydra`` section)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_cli(*args: str, cwd: Path, timeout: float = 300, module: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` (or ``python -m MODULE ARGS``) in ``cwd`` and capture its output."""
    cmd = [sys.executable, "-m", module] if module else [sys.executable, str(ROOT / "train.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_same_last_weights(run_a: Path, run_b: Path) -> None:
    """The two runs' ``checkpoints/last.ckpt`` hold bit-identical weights."""
    def weights(run: Path) -> dict:
        import torch

        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]

    a, b = weights(run_a), weights(run_b)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


@pytest.fixture
def quick() -> list[str]:
    return list(QUICK)
