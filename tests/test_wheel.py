"""lightopt as a plugin from its wheel: a fresh virtual environment whose lightopt is the built wheel alone runs
the example project (a single run and a pruned sweep), the schedule preview and the packaged training entry
point, all from directories outside the checkout.

The fresh environment borrows the test environment's third-party packages (torch, Lightning, Hydra, Optuna...)
through a ``.pth`` file, so nothing is downloaded; lightopt itself, its configs and its Hydra plugin come only
from the wheel (the checkout's editable install is not visible there).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from lightopt.core.schedules import build_lr_fn
from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "own_project"


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_every_package_of_the_checkout_goes_into_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lightopt").rglob("__init__.py")}
    found |= {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hydra_plugins").rglob("__init__.py")}
    assert found | {"lightopt.conf", "hydra_plugins"} == listed


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """The python of a fresh venv with lightopt installed from a wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ into the source tree, and test workers may build at once
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs", "multirun"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(source)]
    if importlib.util.find_spec("setuptools") is not None:
        build.insert(4, "--no-build-isolation")  # the build backend is here already: nothing to download
    _run(build, cwd=tmp)
    wheel = next((tmp / "dist").glob("lightopt-*.whl"))
    venv = tmp / "venv"
    # without pip and setuptools of its own: the borrowed ones (pip included) serve, and nothing older shadows them
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # dependencies resolve against the borrowed packages: --no-index proves the wheel's requirements are met
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel)], cwd=tmp)
    where = _run([str(python), "-c", "import lightopt, lightopt.conf; print(lightopt.__file__)"], cwd=tmp).stdout
    assert str(site) in where and str(ROOT) not in where
    return python


@pytest.mark.slow
def test_the_example_project_trains_with_adamw_its_norm_exclusion_and_wsd(wheel_python, tmp_path):
    project = tmp_path / "own_project"
    shutil.copytree(EXAMPLE, project)
    _run([str(wheel_python), "train.py", f"hydra.run.dir={tmp_path / 'run'}"], cwd=project)

    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)  # our own file, just written
    groups = state["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["default", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [5.0e-4, 0.0]  # regularization=l2, biases and LayerNorm exempt
    # the two Linear weights decay; their biases and both LayerNorm parameters (LayerNorm.weight included) do not
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert {"lr", "betas", "eps", "amsgrad"} <= set(groups[0])  # AdamW's hyperparameters

    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        lrs = [(int(r["step"]), float(r["lr/default"])) for r in csv.DictReader(f) if r.get("lr/default")]
    steps = 10 * math.ceil(142 / 16)  # max_epochs x batches per epoch
    wsd = build_lr_fn({"name": "wsd", "warmup": 0.05, "decay": 0.2, "lr_final": 0.0, "decay_shape": "linear"},
                      steps, 3.0e-3)
    assert len(lrs) == steps
    for step, lr in lrs:
        assert lr == pytest.approx(wsd(step), rel=1e-6, abs=1e-12), step


@pytest.mark.slow
def test_the_example_sweep_records_six_trials_with_finite_values(wheel_python, tmp_path):
    project = tmp_path / "own_project"
    shutil.copytree(EXAMPLE, project)
    sweep = tmp_path / "sweep"
    _run([str(wheel_python), "train.py", "-m", "hparams_search=lr", f"hydra.sweep.dir={sweep}",
          "hydra.sweeper.report=false"], cwd=project)
    with open(sweep / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 6
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(math.isfinite(float(t["value"])) for t in trials)
    # each trial reported val/acc after every epoch through OptunaPruning: a pruned one stopped early, and the
    # callback recorded it (the example's task function writes no results.json and returns val/acc)
    for t in trials:
        if t["state"] == "PRUNED":
            assert t["status"] == "pruned" and int(t["steps"]) < 90


@pytest.mark.slow
def test_preview_and_training_entry_point_run_outside_any_checkout(wheel_python, tmp_path):
    _run([str(wheel_python), "-m", "lightopt.preview", "schedule=wsd", "steps=100",
          f"hydra.run.dir={tmp_path / 'preview'}"], cwd=tmp_path)
    with open(tmp_path / "preview" / "schedule.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 100
    _run([str(wheel_python), "-m", "lightopt.train", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
          "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
         cwd=tmp_path)
    assert (tmp_path / "run" / "results.json").is_file()
