"""Shared test helpers: the real Hydra config composed, train.py run as a user would, sweeps with stand-in tasks."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
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


TINY_APP = ROOT / "tests" / "apps" / "tiny" / "app.py"  # a Hydra app with the lightopt sweeper and no torch


def run_tiny(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python tests/apps/tiny/app.py ARGS`` in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(TINY_APP), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


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


# ------------------------------------------------------------------------------------------- sweeps

LR = "optimizer.lr=tag(log,interval(1e-4,1e-1))"  # a searched lr, log-uniform


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv") as f:
        return list(csv.DictReader(f))


def task_overrides(run_dir: Path) -> dict[str, str]:
    lines = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


def load_study(sweep_dir: Path) -> optuna.Study:
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return optuna.load_study(study_name=results["study_name"], storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def train_in_process(*args: str) -> int | str | None:
    """``python train.py ARGS`` through the same Hydra entry point in this process (no interpreter start-up);
    its exit code."""
    from lightopt.train import main

    argv = sys.argv
    sys.argv = ["train.py", *args]
    try:
        main()
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def sweep_in_process(sweep_dir: Path, task, *overrides: str) -> None:
    """``python train.py -m OVERRIDES`` with ``task`` in place of training (the real sweeper and launcher)."""
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(str(CONF)))
    try:
        hydra.multirun(config_name="train", task_function=task, with_log_configuration=False,
                       overrides=[*overrides, f"hydra.sweep.dir={sweep_dir}"])
    finally:
        GlobalHydra.instance().clear()


def bowl(cfg) -> float:
    """Best at lr = 1e-2 (the default objective, val/acc, is maximized)."""
    return -((math.log10(cfg.optimizer.lr) + 2) ** 2) - (0.5 if cfg.optimizer._target_.endswith("SGD") else 0.0)


def two_objectives(cfg) -> float:
    """Writes results.json as a training run does: val/acc best at lr = 1e-2, wall_seconds growing with lr."""
    acc = 1 - (math.log10(cfg.optimizer.lr) + 2) ** 2 / 10
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "results.json").write_text(json.dumps({
        "objective": "val/acc", "value": acc, "direction": "maximize", "status": "completed",
        "metrics": {"val/acc": {"final": acc, "best": acc}, "val/loss": {"final": 1 - acc, "best": 1 - acc}},
        "global_step": 7, "epochs": 1, "wall_seconds": 100 * cfg.optimizer.lr}))
    return acc


def out_of_memory(cfg) -> float:
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the process ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
