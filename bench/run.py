"""Benchmarks of lightopt against plain PyTorch loops on the same data, in the same process.

    python bench/run.py [--small] [--gpu] [--out FILE]

Every figure is a ratio against a plain loop written in this file and run in the same process on the same
data, alternating rounds so the machine's noise cancels. Writes a JSON (one object per case, with its
``ratio`` and raw figures) and a Markdown table beside it.

Cases:
- ``cpu_digits``: the default task (digits MLP, Adam, batch 64): lightopt's training steps per second over a
  plain loop using ``DataLoader`` over a ``TensorDataset``.
- ``cpu_digits_wandb``: the same lightopt run with ``logger=wandb`` (offline) over ``logger=none``: what
  tracking costs a small model.
- ``cpu_sweep_parallel``: trials per minute of a digits sweep (``python train.py -m``) with two trials at a
  time (``hydra/launcher=joblib hydra.sweeper.n_jobs=2``) over one at a time; ``gpu_sweep_parallel`` (with
  ``--gpu``) the same with every trial on the one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightopt.data import DigitsDataModule  # noqa: E402
from lightopt.models import MLP  # noqa: E402
from lightopt.module import LitModel  # noqa: E402

ADAM = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 3e-3})
COSINE = OmegaConf.create({"name": "cosine", "warmup": 0, "min_lr": 0.0, "total_steps": None})


class StepTimer(Callback):
    """Wall time from the first training batch to the end of training, and the steps taken."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(self, "start"):
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step


def lightopt_digits(epochs: int, out_dir: Path, logger: str = "csv") -> float:
    """Steps/s of lightopt's training path: LitModel, TensorBatches, lr logging, and ``logger``."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    module = LitModel(MLP(64, 10), nn.CrossEntropyLoss(), ADAM, COSINE, task="classification", num_classes=10)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0,
        logger=make_logger(logger, out_dir), log_every_n_steps=10,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    if logger == "wandb":
        trainer.logger.experiment.finish()
    return timer.steps / timer.seconds


def make_logger(kind: str, out_dir: Path) -> Any:
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(out_dir, name="", version="")
    if kind == "wandb":
        from lightopt.tracking import wandb_logger

        return wandb_logger(out_dir, mode="offline", name="bench")
    return False


def plain_digits(epochs: int) -> float:
    """Steps/s of the textbook loop: DataLoader over a TensorDataset, Adam, cosine schedule."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    x, y = dm._splits[0], dm._splits[1]
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = MLP(64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
    return steps / (time.perf_counter() - start)


def cpu_digits(small: bool, work: Path) -> dict[str, Any]:
    torch.set_num_threads(1)  # both loops alike; small models gain nothing from intra-op threads
    epochs, rounds = (2, 2) if small else (10, 5)
    lightopt_rates, plain_rates = [], []
    plain_digits(1)  # warm-up: first-call allocations and lazy imports
    for r in range(rounds):
        plain_rates.append(plain_digits(epochs))
        lightopt_rates.append(lightopt_digits(epochs, work / f"digits-{r}"))
    lo, pl = statistics.median(lightopt_rates), statistics.median(plain_rates)
    return {
        "ratio": round(lo / pl, 3),
        "lightopt_steps_per_s": round(lo, 1),
        "plain_steps_per_s": round(pl, 1),
        "rounds": rounds,
        "epochs_per_round": epochs,
        "target": ">= 1.0",
    }


def cpu_digits_wandb(small: bool, work: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    epochs, rounds = (2, 1) if small else (10, 3)
    with_wandb, without = [], []
    for r in range(rounds):
        without.append(lightopt_digits(epochs, work / f"none-{r}", logger="none"))
        with_wandb.append(lightopt_digits(epochs, work / f"wandb-{r}", logger="wandb"))
    w, n = statistics.median(with_wandb), statistics.median(without)
    return {
        "ratio": round(w / n, 3),
        "lightopt_steps_per_s": round(w, 1),
        "plain_steps_per_s": round(n, 1),
        "measures": "lightopt with logger=wandb (offline) over lightopt with logger=none",
        "rounds": rounds,
        "epochs_per_round": epochs,
        "target": "close to 1.0 (baseline: logger=none)",
    }


def sweep_trials_per_min(work: Path, name: str, n_trials: int, epochs: int, accelerator: str,
                         parallel: int) -> float:
    """Trials per minute of a real ``python train.py -m`` sweep, ``parallel`` trials at a time."""
    out = (work / name).resolve()
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={out}", "hydra/sweeper/sampler=random",
           f"hydra.sweeper.n_trials={n_trials}", "optimizer.lr=tag(log,interval(1e-4,1e-1))", "logger=csv",
           f"trainer.max_epochs={epochs}", f"trainer.accelerator={accelerator}", "trainer.enable_progress_bar=false",
           "trainer.enable_model_summary=false", "checkpoint.enabled=false"]
    if parallel > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.sweeper.n_jobs={parallel}", f"hydra.launcher.n_jobs={parallel}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {name} failed:\n{proc.stderr[-3000:]}")
    return 60 * n_trials / seconds


def sweep_parallel(small: bool, work: Path, accelerator: str = "cpu") -> dict[str, Any]:
    n_trials, epochs = (2, 1) if small else (8, 3)
    sequential = sweep_trials_per_min(work, f"{accelerator}-sequential", n_trials, epochs, accelerator, 1)
    parallel = sweep_trials_per_min(work, f"{accelerator}-parallel", n_trials, epochs, accelerator, 2)
    return {
        "ratio": round(parallel / sequential, 3),
        "parallel_trials_per_min": round(parallel, 1),
        "sequential_trials_per_min": round(sequential, 1),
        "measures": "trials/min with 2 trials at a time (joblib) over 1 at a time, whole sweep incl. start-up",
        "n_trials": n_trials,
        "epochs_per_trial": epochs,
        "target": "> 1.0",
    }


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = ["| case | ratio | lightopt | baseline | target |", "| --- | --- | --- | --- | --- |"]
    for name, r in results["cases"].items():
        # the first two rates of a case: lightopt's (or the variant measured), then the baseline's
        (k1, lo), (k2, pl) = [(k, v) for k, v in r.items() if "_per_" in k][:2]
        unit = k1.split("_", 1)[1].replace("_", " ")
        lines.append(f"| {name} | {r['ratio']} | {lo} {unit} | {pl} {unit} | {r.get('target', '')} |")
    env = results["environment"]
    lines.append("")
    lines.append(f"torch {env['torch']}, lightning {env['lightning']}, Python {env['python']}, "
                 f"{env['cpus']} CPUs{', ' + env['cuda'] if env['cuda'] else ''}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick run that only checks the cases work")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU cases (needs CUDA)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"), help="JSON output path")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    work = args.out.parent / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device")
    cases = {"cpu_digits": cpu_digits(args.small, work), "cpu_digits_wandb": cpu_digits_wandb(args.small, work),
             "cpu_sweep_parallel": sweep_parallel(args.small, work)}
    if args.gpu:
        cases["gpu_sweep_parallel"] = sweep_parallel(args.small, work, accelerator="gpu")
    results = {"cases": cases, "environment": environment(), "small": args.small}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cases | {"environment": results["environment"]}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
