"""See a learning-rate schedule before training: ``python -m lightopt.preview schedule=NAME steps=N``.

A Hydra app over the same ``conf/`` as ``train.py``: it builds the model's param groups, the optimizer and
the schedule exactly as training would, steps the schedule ``steps`` times without training, prints a short
table and writes ``schedule.csv`` (step, then the lr of each param group) and ``schedule.png`` into its run
directory. A ``plateau`` schedule has no metric to react to here, so it shows only its warmup.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightopt.cli import exit_on_config_error
from lightopt.core.optimizers import create_optimizer
from lightopt.core.schedules import create_scheduler, to_steps
from lightopt.errors import ConfigError
from lightopt.run.training import build_model

log = logging.getLogger(__name__)


def lr_table(cfg: DictConfig, steps: int) -> tuple[list[str], list[list[float]]]:
    """Group names and, for each step ``0..steps-1``, the lr of every param group."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError("steps", steps, "an integer number of optimizer steps >= 1")
    model = build_model(cfg, instantiate(cfg.data))
    optimizer = create_optimizer(
        model, cfg.optimizer, regularization=cfg.regularization, lr_multipliers=cfg.get("lr_multipliers"),
        lr_layer_decay=cfg.get("lr_layer_decay"),
    )
    scheduler = create_scheduler(optimizer, cfg.schedule, steps)
    names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    rows = []
    with warnings.catch_warnings():
        # stepping a schedule without optimizer steps is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            rows.append([g["lr"] for g in optimizer.param_groups])
            scheduler.step()
    return names, rows


def write_csv(path: Path, names: list[str], rows: list[list[float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *names])
        for step, lrs in enumerate(rows):
            writer.writerow([step, *(f"{lr:.8g}" for lr in lrs)])


def plot(path: Path, names: list[str], rows: list[list[float]], title: str, warmup: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = range(len(rows))
    for i, name in enumerate(names):
        ax.plot(steps, [r[i] for r in rows], label=name, linewidth=1.6)
    if warmup:
        ax.axvspan(0, warmup, color="tab:orange", alpha=0.12, label=f"warmup ({warmup} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_table(names: list[str], rows: list[list[float]], n_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="learning rate by optimizer step")
    table.add_column("step", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    last = len(rows) - 1
    picks = sorted({round(i * last / max(1, n_rows - 1)) for i in range(n_rows)} | {last})
    for step in picks:
        table.add_row(str(step), *(f"{lr:.4g}" for lr in rows[step]))
    Console().print(table)


def preview(cfg: DictConfig, out_dir: Path) -> Path:
    """Compute, print, and write ``schedule.csv`` and ``schedule.png`` into ``out_dir``."""
    steps = cfg.steps
    names, rows = lr_table(cfg, steps)
    total = cfg.schedule.get("total_steps") or steps
    warmup = to_steps(cfg.schedule.get("warmup", 0) or 0, total, "schedule.warmup")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "schedule.csv", names, rows)
    plot(out_dir / "schedule.png", names, rows, f"schedule={cfg.schedule.name}, T={total}", warmup)
    print_table(names, rows, cfg.get("rows", 12))
    log.info("wrote %s and %s", out_dir / "schedule.csv", out_dir / "schedule.png")
    return out_dir


@hydra.main(version_base="1.3", config_path="pkg://lightopt.conf", config_name="preview")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_config_error():
        preview(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
