"""What a run prints to the terminal: the progress bar, a summary before training, final metrics after.

Printing stays at the edges: :func:`summary_panel` and :func:`results_panel` are pure functions from plain
data to Rich renderables; :func:`run_summary` reads that data off the real objects once training starts
(:class:`RunSummary`, rank 0 only). The ``console`` settings are described in ``conf/train.yaml``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from lightopt.errors import ConfigError
from lightopt.formatting import count, fmt

log = logging.getLogger(__name__)

SUMMARY_CHOICES = ("auto", True, False)
PROGRESS_BARS = ("auto", "rich", "tqdm", "none")

# (section, [(label, value), ...]) in display order: plain data for summary_panel
Sections = Sequence[tuple[str, Sequence[tuple[str, Any]]]]


@dataclass(frozen=True)
class ConsoleSettings:
    summary: bool
    progress_bar: str  # "rich" | "tqdm" | "none"


def settings(cfg: Mapping[str, Any], in_sweep: bool = False, isatty: bool | None = None) -> ConsoleSettings:
    """Resolve ``cfg.console`` (absent = defaults) for this process."""
    section = cfg.get("console") or {}
    summary = section.get("summary", "auto")
    if summary not in SUMMARY_CHOICES:
        raise ConfigError("console.summary", summary, "auto | true | false")
    bar = section.get("progress_bar", "auto")
    if bar not in PROGRESS_BARS:
        raise ConfigError("console.progress_bar", bar, " | ".join(PROGRESS_BARS))
    enabled = (cfg.get("trainer") or {}).get("enable_progress_bar", True)
    if enabled is False:
        bar = "none"
    elif bar == "auto":
        tty = sys.stdout.isatty() if isatty is None else isatty
        bar = "rich" if tty else "none"
    return ConsoleSettings(summary=(not in_sweep) if summary == "auto" else bool(summary), progress_bar=bar)


#: Lightning's notices that say nothing lightopt's own panels do not (devices, an advert, a loading note)
LIGHTNING_NOTICES = ("GPU available", "TPU available", "HPU available", "\N{ELECTRIC LIGHT BULB} Tip:",
                     "Loading `train_dataloader` to estimate", "Initializing distributed:",
                     "-" * 100 + "\ndistributed_backend=")
#: warnings about lightopt's own choices, not the user's (the CSV logger writes into the run directory Hydra made)
LIBRARY_WARNINGS = (r"Experiment logs directory .* exists and is not empty",
                    r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class _DropNotices(logging.Filter):
    def __init__(self, notices: tuple[str, ...]) -> None:
        super().__init__()
        self.notices = notices

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.notices)


def quiet_libraries(in_sweep: bool) -> None:
    """Keep the console to what lightopt shows: Lightning's notices and library warnings about lightopt's own
    choices go; in a sweep trial, Lightning's "`Trainer.fit` stopped" too (the sweep prints a line per trial)."""
    notices = LIGHTNING_NOTICES + (("`Trainer.fit` stopped",) if in_sweep else ())
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.distributed"):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropNotices)]:
            logger.removeFilter(old)
        logger.addFilter(_DropNotices(notices))
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def lightning_info_off() -> Iterator[None]:
    """Lightning's info lines off for a while (a finder's trial fits, its checkpoint saved and restored): lightopt
    says in one line what the finder found. Warnings still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def logs_to_files_only() -> None:
    """On DDP ranks other than 0: their log lines go to their own log file, not to the console rank 0 owns."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # FileHandler is a subclass: kept
            root.removeHandler(handler)


def progress_bar_callbacks(resolved: ConsoleSettings) -> list[Callback]:
    """The bar as a callback (Lightning's own default is Rich's whenever Rich is installed).

    For ``none`` there is none: give the trainer ``enable_progress_bar=False`` as well.
    """
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    if resolved.progress_bar == "rich":
        return [RichProgressBar()]
    if resolved.progress_bar == "tqdm":
        return [TQDMProgressBar()]
    return []


def _objective(value: Any) -> str:
    """An objective or metric value, to 6 significant digits."""
    return fmt(value, 6)


def summary_panel(sections: Sections, title: str = "lightopt run") -> Panel:
    """A two-column table (section and key, value) of ``sections`` in a panel."""
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for section, rows in sections:
        for i, (label, value) in enumerate(rows):
            table.add_row(section if i == 0 else "", label, count(value))
    return Panel(table, title=title, title_align="left", expand=False)


def results_panel(results: Mapping[str, Any], title: str = "lightopt results",
                  run_dir: str | Path | None = None) -> Panel:
    """The outcome of a run from its ``results.json`` data: objective, status, val metrics, steps, time."""
    status = results.get("status", "?")
    color = {"completed": "green", "pruned": "yellow", "interrupted": "yellow"}.get(status, "red")
    facts = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    direction, cv = results.get("direction"), results.get("cv")
    spread = f" ± {_objective(cv.get('std'))} (mean ± std of {len(cv.get('values') or [])} folds)" if cv else ""
    facts.add_row("objective", f"{results.get('objective')} = {_objective(results.get('value'))}{spread}"
                  + (f" ({direction}, {results.get('reduce', 'best')})" if direction else ""))
    facts.add_row("status", f"[{color}]{status}[/{color}]")
    if results.get("error"):
        facts.add_row("error", str(results["error"]))
    steps, epochs = count(results.get("global_step")), count(results.get("epochs"))
    facts.add_row("steps", f"{steps} optimizer steps, {epochs} epochs")
    facts.add_row("wall time", f"{results.get('wall_seconds', float('nan')):.1f} s")
    lr = results.get("lr")
    if lr is not None:
        found = results.get("lr_find")
        facts.add_row("lr", count(lr) + (" (lr_find)" if found else ""))
    if run_dir is not None:
        facts.add_row("run dir", str(run_dir))
    if results.get("best_checkpoint"):
        facts.add_row("best checkpoint", str(results["best_checkpoint"]))
    parts: list[RenderableType] = [facts]
    if cv:
        parts += ["", _folds_table(results.get("objective"), cv)]
    metrics = results.get("metrics") or {}
    if metrics:
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("metric")
        table.add_column("final", justify="right")
        table.add_column("best", justify="right")
        table.add_column("best at step", justify="right")
        for name, record in metrics.items():
            table.add_row(name, _objective(record.get("final")), _objective(record.get("best")),
                          count(record.get("best_step")))
        parts += ["", table]
    return Panel(Group(*parts), title=title, title_align="left", expand=False)


def _folds_table(objective: Any, cv: Mapping[str, Any]) -> Table:
    """One row per fold (its objective value and run directory), then the mean and standard deviation."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("fold")
    table.add_column(str(objective), justify="right")
    table.add_column("run dir", overflow="fold")
    values, dirs = list(cv.get("values") or []), list(cv.get("run_dirs") or [])
    for i, run_dir in enumerate(dirs):
        table.add_row(str(i + 1), _objective(values[i]) if i < len(values) else "-", str(run_dir))
    table.add_row("mean", _objective(cv.get("mean")), "", style="bold")
    table.add_row("std", _objective(cv.get("std")), "")
    return table


def show(renderable: RenderableType, console: Console | None = None) -> None:
    """Print through Rich's global console, which a live Rich progress bar prints around; off a terminal
    (a log file, CI), as wide as the content needs, so that no path is cut to 80 columns."""
    if console is None:
        from rich import get_console

        console = get_console()
        if not console.is_terminal:
            from rich.measure import Measurement

            width = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
            console = Console(file=console.file, width=max(console.width, width), no_color=console.no_color,
                              force_terminal=False)
    console.print(renderable)


def show_results(results: Mapping[str, Any], run_dir: str | Path, console: Console | None = None) -> None:
    """Print :func:`results_panel` of a run's results (a warning instead if they cannot be shown)."""
    try:
        panel = results_panel(results, title="lightopt results", run_dir=run_dir)
    except Exception as err:  # noqa: BLE001 - the run is over and recorded: printing must not fail it
        log.warning("no results table: %s: %s", type(err).__name__, err)
        return
    show(panel, console)


# --- the summary from the real objects --------------------------------------------------------------------


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _samples(loader: Any) -> int | None:
    """Samples a loader serves per epoch over all ranks, when it can tell (a dataset, or tensors ``x``)."""
    for attr in ("dataset", "x"):
        data = getattr(loader, attr, None)
        if data is not None:
            try:
                return len(data)
            except TypeError:
                return None
    return None


def _loader_summary(loader: Any, batches: Any) -> str:
    n = _samples(loader)
    total = sum(batches) if isinstance(batches, (list, tuple)) else batches
    parts = [] if n is None else [f"{n:,} samples"]
    if total is not None and not (isinstance(total, float) and math.isinf(total)):
        parts.append(f"{int(total):,} batches" + ("/epoch" if loader is not None else ""))
    return ", ".join(parts) or "-"


Rows = list[tuple[str, Any]]


def run_summary(trainer: L.Trainer, pl_module: L.LightningModule, cfg: Mapping[str, Any], out_dir: str | Path,
                lr_find: Mapping[str, Any] | None = None, threads: str | None = None) -> list[tuple[str, Rows]]:
    """The summary's data, from the trainer and module as training starts (after setup: T is known)."""
    return [("optimizer", _optimizer_rows(trainer, cfg, lr_find)), ("schedule", _schedule_rows(trainer, cfg)),
            ("model", _model_rows(pl_module)), ("data", _data_rows(trainer)),
            ("device", _device_rows(trainer, threads)), ("output", [("run dir", str(out_dir))])]


def _optimizer_rows(trainer: L.Trainer, cfg: Mapping[str, Any], lr_find: Mapping[str, Any] | None) -> Rows:
    opt = trainer.optimizers[0] if trainer.optimizers else None
    opt_cfg = cfg.get("optimizer") or {}
    if opt is None:
        return [("class", opt_cfg.get("_target_", "-"))]
    rows: Rows = [("class", f"{type(opt).__name__} ({opt_cfg.get('_target_', '?')})")]
    lr0 = opt.defaults.get("lr")
    lr0 = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"]) if lr0 is None else lr0
    source = ""
    if lr_find:
        source = f" (lr_find, replaces {count(lr_find.get('configured_lr'))})"
    elif (cfg.get("lr_scaling") or {}).get("rule", "none") not in (None, "none"):
        source = f" (lr_scaling.rule={cfg['lr_scaling']['rule']} of {count(opt_cfg.get('lr'))})"
    rows.append(("lr", f"{count(float(lr0))}{source}"))
    decays = sorted({float(g.get("weight_decay", 0.0)) for g in opt.param_groups})
    rows.append(("weight decay", " / ".join(count(d) for d in decays) if decays else "0"))
    rows.append(("param groups", len(opt.param_groups)))
    averaging = cfg.get("averaging") or {}
    if averaging.get("name", "none") != "none":
        detail = ", ".join(f"{k} {count(v)}" for k, v in averaging.items() if k != "name" and v is not None)
        rows.append(("averaging", f"{averaging['name']} ({detail}): validation, objective and checkpoints use "
                     "the averaged weights"))
    return rows


def _schedule_rows(trainer: L.Trainer, cfg: Mapping[str, Any]) -> Rows:
    from lightopt.core.schedules import to_steps

    schedule = cfg.get("schedule")
    if schedule is None:
        return [("name", "none")]
    given = schedule.get("total_steps")
    horizon = given if given is not None else trainer.estimated_stepping_batches
    total = horizon if isinstance(horizon, float) and math.isinf(horizon) else int(horizon)
    warmup = schedule.get("warmup")
    try:
        warm = 0 if warmup is None else to_steps(warmup, 0 if isinstance(total, float) else total, "schedule.warmup")
    except ConfigError:
        warm = "?"
    return [("name", schedule.get("name", "?")), ("T", total), ("warmup", warm)]


def _model_rows(pl_module: L.LightningModule) -> Rows:
    net = getattr(pl_module, "model", pl_module)
    params = list(net.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return [("class", type(net).__name__), ("parameters", total)] + (
        [("trainable", trainable)] if trainable != total else [])


def _data_rows(trainer: L.Trainer) -> Rows:
    dm = trainer.datamodule
    rows: Rows = [("class", type(dm).__name__ if dm is not None else "-"),
                  ("train", _loader_summary(trainer.train_dataloader, trainer.num_training_batches))]
    try:
        val_loaders, val_batches = trainer.val_dataloaders, trainer.num_val_batches
    except Exception:  # noqa: BLE001 - no validation data is not an error here
        val_loaders, val_batches = None, None
    if val_loaders is not None:
        rows.append(("val", _loader_summary(val_loaders, val_batches)))
    batch = getattr(trainer.train_dataloader, "batch_size", None) or getattr(dm, "batch_size", None)
    if batch is not None:
        global_batch = batch * trainer.world_size * trainer.accumulate_grad_batches
        rows.append(("batch size", f"{batch:,}" + (f" (global {global_batch:,})" if global_batch != batch else "")))
    return rows


def _device_rows(trainer: L.Trainer, threads: str | None) -> Rows:
    accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    nodes = f" x {trainer.num_nodes} nodes" if trainer.num_nodes > 1 else ""
    return [("accelerator", f"{accelerator} x {trainer.num_devices}{nodes}"),
            ("strategy", type(trainer.strategy).__name__), ("precision", str(trainer.precision)),
            ("CPU threads", f"{torch.get_num_threads()}" + (f" ({threads})" if threads else ""))]


class RunSummary(Callback):
    """Prints :func:`summary_panel` of :func:`run_summary` once, on rank 0, when training starts.

    ``lr_find`` (the ``lr_find`` entry of results.json) may be set after construction.
    """

    def __init__(self, cfg: Mapping[str, Any], out_dir: str | Path, console: Console | None = None) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.console = console
        self.lr_find: Mapping[str, Any] | None = None
        self.threads: str | None = None  # why torch has its CPU threads (lightopt.run.speed.choose_threads)
        self.printed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.printed or not trainer.is_global_zero:
            return
        self.printed = True
        try:
            sections = run_summary(trainer, pl_module, self.cfg, self.out_dir, self.lr_find, self.threads)
        except Exception as err:  # noqa: BLE001 - a summary that cannot be read must not stop training
            log.warning("no run summary: %s: %s", type(err).__name__, err)
            return
        show(summary_panel(sections), self.console)
