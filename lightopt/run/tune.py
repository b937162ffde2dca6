"""Tuning before training: the learning-rate range test (``tune=lr_find``), on the run's own trainer, model and
data, through Lightning's learning-rate finder.

:func:`check_tune` validates the ``tune`` section, :func:`find_lr` runs the test (weights, optimizer state and
RNG state are those of before it; ``lr_multipliers`` keep their ratios during it) and writes ``lr_find.png``,
:func:`with_lr` gives the optimizer config with the suggestion as ``lr``. What the test does for a user is in
the README ("Finding the learning rate").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from lightopt.checks import number
from lightopt.errors import ConfigError

log = logging.getLogger(__name__)

TUNERS = ("none", "lr_find")
MODES = ("exponential", "linear")
LR_FIND_KEYS = ("name", "min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
# Lightning's suggestion ignores the first SKIP_BEGIN and the last SKIP_END points of the curve and needs
# two finite points in between
SKIP_BEGIN, SKIP_END = 10, 1
MIN_STEPS = SKIP_BEGIN + SKIP_END + 2
PLOT_NAME = "lr_find.png"


@dataclass(frozen=True)
class LRFindSettings:
    """The ``tune`` section of ``tune=lr_find``, validated."""

    min_lr: float = 1e-6
    max_lr: float = 10.0
    num_training: int = 100
    mode: str = "exponential"
    early_stop_threshold: float | None = 4.0


@dataclass(frozen=True)
class LRFindResult:
    """What the range test found; :meth:`as_dict` is the ``lr_find`` entry of ``results.json``."""

    suggestion: float
    min_lr: float
    max_lr: float
    num_training: int
    mode: str
    steps: int  # points of the loss-vs-lr curve, fewer than num_training when the test stopped early
    configured_lr: float | None  # the lr the suggestion replaced (after lr_scaling)
    plot: str | None  # file name of the plot in the run directory

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_tune(cfg: DictConfig | Mapping[str, Any]) -> LRFindSettings | None:
    """The validated ``tune`` settings, or ``None`` when nothing is tuned (``tune=none`` or no section)."""
    tune = cfg.get("tune")
    if tune is None:
        return None
    name = tune.get("name", "none")
    if name in (None, "none"):
        return None
    if name != "lr_find":
        raise ConfigError("tune.name", name, " | ".join(TUNERS))
    unknown = sorted(set(tune) - set(LR_FIND_KEYS))
    if unknown:
        raise ConfigError(f"tune.{unknown[0]}", tune[unknown[0]], f"keys of tune=lr_find: {', '.join(LR_FIND_KEYS)}",
                          "unknown key")
    defaults = LRFindSettings()
    min_lr = number("tune.min_lr", tune.get("min_lr", defaults.min_lr), "a number > 0", low=0.0, low_open=True)
    max_lr = number("tune.max_lr", tune.get("max_lr", defaults.max_lr), f"a number > tune.min_lr={min_lr:g}",
                    low=min_lr, low_open=True)
    steps = tune.get("num_training", defaults.num_training)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise ConfigError("tune.num_training", steps, f"an integer >= {MIN_STEPS} (optimizer steps of the test; "
                          f"the suggestion ignores the first {SKIP_BEGIN} and the last {SKIP_END})")
    mode = tune.get("mode", defaults.mode)
    if mode not in MODES:
        raise ConfigError("tune.mode", mode, " | ".join(MODES))
    threshold = tune.get("early_stop_threshold", defaults.early_stop_threshold)
    if threshold is not None:
        allowed = "a number > 1 (stop once the smoothed loss exceeds this multiple of its best), or null"
        threshold = number("tune.early_stop_threshold", threshold, allowed, low=1.0, low_open=True)
    if cfg.get("ckpt_path"):
        raise ConfigError("tune.name", "lr_find", "tune=none when resuming from ckpt_path",
                          "a resumed run continues its checkpoint's learning-rate schedule, the test would be ignored")
    return LRFindSettings(min_lr, max_lr, steps, mode, threshold)


def with_lr(optimizer_cfg: DictConfig | Mapping[str, Any], lr: float) -> DictConfig:
    """A resolved copy of ``optimizer_cfg`` with ``lr`` set (the run's config keeps the lr the user gave)."""
    container = (OmegaConf.to_container(optimizer_cfg, resolve=True) if isinstance(optimizer_cfg, DictConfig)
                 else dict(optimizer_cfg))
    copy = OmegaConf.create(container)
    copy.lr = float(lr)
    return copy


# --- the range test ---------------------------------------------------------------------------------------


def _optimizer_of(configured: Any) -> torch.optim.Optimizer | None:
    """The optimizer in what ``configure_optimizers`` returned (an optimizer, a dict, or a sequence)."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured
    if isinstance(configured, Mapping):
        return _optimizer_of(configured.get("optimizer"))
    if isinstance(configured, (list, tuple)) and configured:
        return _optimizer_of(configured[0])
    return None


def _keep_lr_multipliers(module: L.LightningModule) -> Callable[[], None]:
    """Make the finder sweep every param group at its own multiple of the swept lr; returns the undo.

    Lightning's finder sets every group to the same lr. The ratios of the groups' lrs to the optimizer's
    lr (``lr_multipliers``; all 1 otherwise) are read when the optimizer is built and re-applied before
    each optimizer step, so the test measures the configuration that will be trained. The finder's own
    scheduler recomputes the groups' lr from scratch after each step, so the factors never compound.
    Instance attributes shadow the module's hooks for the test only.
    """
    ratios: list[float] = []
    configure, before_step = module.configure_optimizers, module.on_before_optimizer_step

    def configure_optimizers() -> Any:
        configured = configure()
        opt = _optimizer_of(configured)
        if opt is not None:
            base = opt.defaults.get("lr") or opt.param_groups[0]["lr"]
            ratios[:] = [g["lr"] / base for g in opt.param_groups]
        return configured

    def on_before_optimizer_step(optimizer: torch.optim.Optimizer) -> None:
        if len(ratios) == len(optimizer.param_groups):
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] *= ratio
        before_step(optimizer)

    module.configure_optimizers = configure_optimizers  # type: ignore[method-assign]
    module.on_before_optimizer_step = on_before_optimizer_step  # type: ignore[method-assign]

    def undo() -> None:
        del module.configure_optimizers
        del module.on_before_optimizer_step

    return undo


def _quiet_finder(module: L.LightningModule) -> Callable[[], None]:
    """Keep the finder from drawing its TQDM bar; returns the undo.

    The finder's callback (the only one while it runs) draws the bar from its first batch on when its
    ``progress_bar_refresh_rate`` is set; the module's ``on_train_start`` runs before that batch.
    """
    on_train_start = module.on_train_start

    def quiet_on_train_start() -> None:
        for callback in module.trainer.callbacks:
            if hasattr(callback, "progress_bar_refresh_rate"):
                callback.progress_bar_refresh_rate = 0
        on_train_start()

    module.on_train_start = quiet_on_train_start  # type: ignore[method-assign]

    def undo() -> None:
        del module.on_train_start

    return undo


def _save_plot(finder: Any, path: Path) -> None:
    """The finder's ``plot(suggest=True)`` as a PNG, drawn on a bare Figure (no pyplot backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    finder.plot(suggest=True, ax=ax)
    suggestion = finder.suggestion(SKIP_BEGIN, SKIP_END)
    title = f"learning-rate range test, {len(finder.results['lr'])} steps"
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle=":", linewidth=1)
        title += f": suggested lr {suggestion:.3g}"
    ax.set_title(title)
    fig.savefig(path, dpi=100)


def find_lr(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    settings: LRFindSettings,
    out_dir: str | Path,
    configured_lr: float | None = None,
    quiet: bool = False,
) -> LRFindResult:
    """Run the learning-rate range test with ``trainer`` on ``module`` and return its suggestion.

    ``module`` is used for the test only: its hooks are shadowed and Lightning's per-run state in it
    (e.g. a divergence flag set by the test's exploding loss) is not reset, so train a fresh module
    around the same network afterwards. The network's weights are restored by Lightning. Within the
    test the training is not limited by ``trainer.max_epochs`` (it wraps around the data as often as
    ``num_training`` needs) and runs no validation. ``quiet`` hides Lightning's TQDM bar of the test (for
    runs without a progress bar, whose logs would get a carriage-return update per step).

    Raises:
        ConfigError: the test gave no suggestion (``lr_find.png`` is written all the same when there is
            a curve to draw).
    """
    out_dir = Path(out_dir)
    finder = _run_finder(trainer, module, datamodule, settings, quiet)
    lrs, losses = finder.results.get("lr", []), finder.results.get("loss", [])
    plot = None
    if lrs and trainer.is_global_zero:
        _save_plot(finder, out_dir / PLOT_NAME)
        plot = PLOT_NAME
    suggestion = finder.suggestion(SKIP_BEGIN, SKIP_END)
    if suggestion is None or not math.isfinite(suggestion) or suggestion <= 0:
        finite = sum(1 for v in losses[SKIP_BEGIN:len(losses) - SKIP_END] if math.isfinite(v))
        raise ConfigError(
            "tune", {"num_training": settings.num_training, "min_lr": settings.min_lr, "max_lr": settings.max_lr,
                     "early_stop_threshold": settings.early_stop_threshold},
            "more steps (tune.num_training), a lower tune.min_lr or tune.max_lr, or a higher "
            "tune.early_stop_threshold (null = never stop early)",
            f"the learning-rate range test gave no suggestion: it ran {len(lrs)} of {settings.num_training} "
            f"steps and has {finite} finite loss values after the first {SKIP_BEGIN} (2 needed)"
            + (f"; its curve is in {out_dir / PLOT_NAME}" if plot else ""),
        )
    result = LRFindResult(suggestion=float(suggestion), min_lr=settings.min_lr, max_lr=settings.max_lr,
                          num_training=settings.num_training, mode=settings.mode, steps=len(lrs),
                          configured_lr=configured_lr, plot=plot)
    if trainer.is_global_zero:
        replaced = "" if configured_lr is None else f" (replaces the configured lr {configured_lr:g})"
        log.info("tune=lr_find: suggested lr %g after %d steps from %g to %g%s; curve in %s", result.suggestion,
                 result.steps, settings.min_lr, settings.max_lr, replaced, out_dir / PLOT_NAME)
    else:  # every rank must train at the same lr; its log says which
        log.info("rank %d: tune=lr_find: lr %g", trainer.global_rank, result.suggestion)
    return result


def _run_finder(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule,
                settings: LRFindSettings, quiet: bool) -> Any:
    """Lightning's finder on the run's trainer, its epoch limit and validation lifted for the test only."""
    from lightning.pytorch.tuner import Tuner

    loop = trainer.fit_loop
    saved_loop = (loop.max_epochs, trainer.check_val_every_n_epoch)
    if loop.max_epochs is not None and loop.max_epochs >= 0:
        loop.max_epochs = max(loop.max_epochs, settings.num_training)
    if trainer.check_val_every_n_epoch is not None:
        trainer.check_val_every_n_epoch = 2**31 - 1  # no validation within the test
    undo = _keep_lr_multipliers(module)
    undo_quiet = _quiet_finder(module) if quiet else (lambda: None)
    try:
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=settings.min_lr, max_lr=settings.max_lr,
            num_training=settings.num_training, mode=settings.mode,
            early_stop_threshold=settings.early_stop_threshold, update_attr=False,
        )
    finally:
        undo()
        undo_quiet()
        loop.max_epochs, trainer.check_val_every_n_epoch = saved_loop
    if finder is None:  # Lightning skips the test under fast_dev_run
        raise ConfigError("tune.name", "lr_find", "tune=none with trainer.fast_dev_run",
                          "Lightning skips the learning-rate finder in a fast_dev_run")
    return finder


def in_context(err: ConfigError, result: LRFindResult) -> ConfigError:
    """``err`` (e.g. a schedule's ``lr_final`` above the initial lr) saying that the lr came from the test."""
    note = f"optimizer.lr is {result.suggestion:g}, the suggestion of tune=lr_find"
    return ConfigError(err.key, err.value, err.allowed, f"{err.problem}; {note}" if err.problem else note)


def log_result(loggers: list[Any], result: LRFindResult) -> None:
    """Give the loggers the suggestion: as hyperparameters (``lr_find.*``) and as a metric at step 0."""
    for logger in loggers:
        logger.log_hyperparams({"lr_find": result.as_dict()})
        logger.log_metrics({"lr_find/suggestion": result.suggestion}, step=0)
