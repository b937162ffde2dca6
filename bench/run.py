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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
        raw = [(k, v) for k, v in r.items() if k.endswith("_per_s")]
        lo = next((v for k, v in raw if k.startswith("lightopt")), "")
        pl = next((v for k, v in raw if k.startswith("plain")), "")
        unit = raw[0][0].split("_", 1)[1].replace("_", " ") if raw else ""
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
    cases = {"cpu_digits": cpu_digits(args.small, work), "cpu_digits_wandb": cpu_digits_wandb(args.small, work)}
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device")
    results = {"cases": cases, "environment": environment(), "small": args.small}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cases | {"environment": results["environment"]}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
