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
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
MIN_STEPS = 10  # optimizer steps of the test: fewer say nothing about where the loss falls
BETA = 0.98  # weight of the past in the smoothed loss (fastai's and Lightning's value)
START_POINTS = 5  # the untrained loss: the mean of the test's first raw losses, at lrs that change nothing yet
MIN_DESCENT = 0.05  # no suggestion unless the smoothed loss falls by at least this share of the untrained loss
RULE = "min_loss/10"
PLOT_NAME = "lr_find.png"
CURVE_NAME = "lr_find.csv"


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
    min_loss_lr: float | None = None  # the lr at the smoothed loss's minimum
    descent: float | None = None  # how far the smoothed loss fell, as a share of the untrained loss
    rule: str = RULE

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
    unknown = sorted(set(tune) - set(LR_FIND_KEYS) - {"batch_size"})  # tune.batch_size: lightopt.run.batch_size
    if unknown:
        raise ConfigError(f"tune.{unknown[0]}", tune[unknown[0]], f"keys of tune=lr_find: {', '.join(LR_FIND_KEYS)}",
                          "unknown key")
    defaults = LRFindSettings()
    min_lr = number("tune.min_lr", tune.get("min_lr", defaults.min_lr), "a number > 0", low=0.0, low_open=True)
    max_lr = number("tune.max_lr", tune.get("max_lr", defaults.max_lr), f"a number > tune.min_lr={min_lr:g}",
                    low=min_lr, low_open=True)
    steps = tune.get("num_training", defaults.num_training)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise ConfigError("tune.num_training", steps, f"an integer >= {MIN_STEPS} (optimizer steps of the test)")
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


# --- the curve and the rule (pure functions) -------------------------------------------------------------


def smoothed(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """The bias-corrected exponential moving average of ``losses``: ``s_k = a_k / (1 - beta^k)`` with
    ``a_k = beta * a_(k-1) + (1 - beta) * L_k``, ``a_0 = 0``, ``k = 1, 2, ...``; so ``s_1 = L_1``, and a constant loss
    is smoothed to itself. (Lightning's finder divides by ``1 - beta^(k+1)``: its first point is half the loss and
    its curve rises over the first ~50 steps whatever the lr does.)"""
    out, avg = [], 0.0
    for k, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**k))
    return out


def window_of(steps: int) -> int:
    """The odd window of :func:`centered_median` for a curve of ``steps`` points: about a 25th of it, at least 5."""
    return max(5, steps // 25) | 1


def centered_median(losses: Sequence[float], window: int) -> list[float]:
    """Each loss replaced by the median of the ``window`` losses centred on it (fewer at the ends): a curve that
    neither lags behind the lr, as a moving average does, nor follows single spikes."""
    half = window // 2
    return [statistics.median(losses[max(0, i - half):i + half + 1]) for i in range(len(losses))]


def finite_length(losses: Sequence[float]) -> int:
    """Points of the curve up to its first loss that is not finite (the test diverged there)."""
    return next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))


def smoothed_curve(losses: Sequence[float]) -> list[float]:
    """The curve :func:`suggest` reads: the finite start of ``losses``, by :func:`centered_median`."""
    n = finite_length(losses)
    return centered_median(losses[:n], window_of(n))


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` reads off a range test's curve; ``lr`` None with the ``problem`` when nothing."""

    lr: float | None
    min_loss_lr: float | None = None
    descent: float | None = None
    problem: str | None = None
    curve: list[float] = field(default_factory=list, repr=False)  # the smoothed curve it read (finite start)


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    """The lr to train with, by the minimum-divided-by-ten rule, bounded to where the loss fell.

    The curve ends at the first loss that is not finite and is smoothed by :func:`centered_median` (window
    :func:`window_of`). With ``L0`` the untrained loss (the mean of the first :data:`START_POINTS` losses), the
    smoothed loss must fall below ``L0`` by at least :data:`MIN_DESCENT` of ``L0`` (else no clear descent: no
    suggestion). The suggestion is the lr of the smoothed loss's minimum divided by 10 (a decade below the lr
    at which training turns unstable: Smith 2017, fastai's ``minimum``), but never below the lr where the loss
    had made a tenth of its fall: an lr at which the test trained nothing is never suggested.
    """
    n = min(finite_length(losses), len(lrs))
    curve = smoothed_curve(losses[:n])
    if n < START_POINTS + 1:
        return Suggestion(None, problem=f"{n} finite loss values (at least {START_POINTS + 1} needed)", curve=curve)
    start = statistics.fmean(losses[:START_POINTS])
    best = min(range(n), key=curve.__getitem__)
    fall = start - curve[best]
    descent = fall / abs(start) if start else 0.0
    if descent < MIN_DESCENT:
        return Suggestion(None, lrs[best], descent, f"no clear descent: the smoothed loss fell from {start:.4g} to at "
                          f"best {curve[best]:.4g} ({descent:.0%}; at least {MIN_DESCENT:.0%} needed)", curve)
    began = next(i for i in range(best + 1) if curve[i] <= start - 0.1 * fall)
    return Suggestion(max(lrs[best] / 10, lrs[began]), lrs[best], descent, curve=curve)


def _save_curve(lrs: Sequence[float], losses: Sequence[float], curve: Sequence[float], path: Path) -> None:
    """The test's curve as CSV: ``step, lr, loss, smoothed_loss`` (empty after the first loss that is not finite)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, (lr, loss) in enumerate(zip(lrs, losses, strict=False)):
            writer.writerow([i, lr, loss if math.isfinite(loss) else "", curve[i] if i < len(curve) else ""])


def _save_plot(lrs: Sequence[float], losses: Sequence[float], found: Suggestion, mode: str, path: Path) -> None:
    """Loss against lr: raw and smoothed, the minimum and the suggestion marked (a bare Figure: no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    n = len(found.curve)
    ax.plot(lrs[:n], losses[:n], color="0.75", linewidth=0.8, label="loss")
    ax.plot(lrs[:n], found.curve, color="C0", label="smoothed loss")
    if n:  # spikes past the minimum would squash the descent into a flat line
        start, low = statistics.fmean(losses[:START_POINTS]), min(losses[:n])
        ax.set_ylim(low - 0.05 * abs(start - low), max(start, low) + 0.6 * abs(start - low) + 1e-12)
    if mode == "exponential":
        ax.set_xscale("log")
    title = f"learning-rate range test, {n} steps"
    if found.min_loss_lr is not None:
        ax.axvline(found.min_loss_lr, color="0.4", linestyle="--", linewidth=1, label="lowest smoothed loss")
    if found.lr is not None:
        ax.axvline(found.lr, color="red", linestyle=":", linewidth=1.5, label=f"suggestion ({RULE})")
        title += f": suggested lr {found.lr:.3g}"
    ax.set(xlabel="learning rate", ylabel="training loss", title=title)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=100)


# --- the test ---------------------------------------------------------------------------------------------


def find_lr(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    settings: LRFindSettings,
    out_dir: str | Path,
    configured_lr: float | None = None,
    quiet: bool = False,
) -> LRFindResult:
    """Run the learning-rate range test with ``trainer`` on ``module`` and return its :func:`suggest`-ion.

    ``module`` is used for the test only: its hooks are shadowed and Lightning's per-run state in it
    (e.g. a divergence flag set by the test's exploding loss) is not reset, so train a fresh module
    around the same network afterwards. The network's weights are restored by Lightning. Within the
    test the training is not limited by ``trainer.max_epochs`` (it wraps around the data as often as
    ``num_training`` needs) and runs no validation. Under DDP the losses are averaged over the ranks, so
    every rank sees the same curve and takes the same suggestion. ``quiet`` hides Lightning's TQDM bar of
    the test (for runs without a progress bar, whose logs would get a carriage-return update per step).

    Raises:
        ConfigError: the test gave no suggestion (``lr_find.png`` is written all the same when there is
            a curve to draw).
    """
    out_dir = Path(out_dir)
    lrs, losses = _run_finder(trainer, module, datamodule, settings, quiet)
    found = suggest(lrs, losses)
    plot = None
    if lrs and trainer.is_global_zero:
        _save_curve(lrs, losses, found.curve, out_dir / CURVE_NAME)
        _save_plot(lrs, losses, found, settings.mode, out_dir / PLOT_NAME)
        plot = PLOT_NAME
    if found.lr is None:
        raise ConfigError(
            "tune", {"num_training": settings.num_training, "min_lr": settings.min_lr, "max_lr": settings.max_lr,
                     "early_stop_threshold": settings.early_stop_threshold},
            "more steps (tune.num_training), another range (tune.min_lr, tune.max_lr), a higher "
            "tune.early_stop_threshold (null = never stop early), or tune=none to train at optimizer.lr",
            f"the learning-rate range test gave no suggestion after {len(lrs)} of {settings.num_training} steps: "
            f"{found.problem}" + (f"; its curve is in {out_dir / PLOT_NAME}" if plot else ""),
        )
    result = LRFindResult(suggestion=float(found.lr), min_lr=settings.min_lr, max_lr=settings.max_lr,
                          num_training=settings.num_training, mode=settings.mode, steps=len(lrs),
                          configured_lr=configured_lr, plot=plot, min_loss_lr=found.min_loss_lr,
                          descent=found.descent)
    if trainer.is_global_zero:
        replaced = "" if configured_lr is None else f" (replaces the configured lr {configured_lr:g})"
        log.info("tune=lr_find: suggested lr %g (%s: lowest smoothed loss at lr %g, %.0f%% below the untrained "
                 "loss) after %d steps from %g%s; curve in %s", result.suggestion, RULE, found.min_loss_lr,
                 100 * found.descent, result.steps, settings.min_lr, replaced, out_dir / PLOT_NAME)
    else:  # every rank must train at the same lr; its log says which
        log.info("rank %d: tune=lr_find: lr %g", trainer.global_rank, result.suggestion)
    return result


def _record_losses(module: L.LightningModule, threshold: float | None) -> tuple[list[float], Callable[[], None]]:
    """Record the training loss of each optimizer step of the test (averaged over DDP ranks) and stop the test
    once the smoothed loss exceeds ``threshold`` times its lowest, or is not finite; returns the losses and the
    undo. The module's own hook shadows Lightning's finder, whose loss curve is biased (see :func:`smoothed`)."""
    losses: list[float] = []
    on_batch_end = module.on_train_batch_end

    def on_train_batch_end(outputs: Any, batch: Any, batch_idx: int) -> None:
        trainer = module.trainer
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            loss = outputs if isinstance(outputs, torch.Tensor) else (outputs or {}).get("loss")
            value = math.nan if loss is None else float(trainer.strategy.reduce(loss.detach(), reduce_op="mean"))
            losses.append(value)
            if not math.isfinite(value):
                trainer.should_stop = True
            elif threshold is not None and len(losses) > 1:
                curve = smoothed(losses)  # causal: the test cannot look ahead
                if curve[-1] > threshold * min(curve):
                    trainer.should_stop = True
        on_batch_end(outputs, batch, batch_idx)

    module.on_train_batch_end = on_train_batch_end  # type: ignore[method-assign]

    def undo() -> None:
        del module.on_train_batch_end

    return losses, undo


def _run_finder(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule,
                settings: LRFindSettings, quiet: bool) -> tuple[list[float], list[float]]:
    """Lightning's finder on the run's trainer (its epoch limit and validation lifted for the test only): the lr
    and the loss of each step. Lightning moves the lr and restores weights and state; the losses are ours."""
    from lightning.pytorch.tuner import Tuner

    loop = trainer.fit_loop
    saved_loop = (loop.max_epochs, trainer.check_val_every_n_epoch)
    if loop.max_epochs is not None and loop.max_epochs >= 0:
        loop.max_epochs = max(loop.max_epochs, settings.num_training)
    if trainer.check_val_every_n_epoch is not None:
        trainer.check_val_every_n_epoch = 2**31 - 1  # no validation within the test
    undo = _keep_lr_multipliers(module)
    undo_quiet = _quiet_finder(module) if quiet else (lambda: None)
    losses, undo_record = _record_losses(module, settings.early_stop_threshold)
    try:
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=settings.min_lr, max_lr=settings.max_lr,
            num_training=settings.num_training, mode=settings.mode, early_stop_threshold=None, update_attr=False,
        )
    finally:
        undo_record()
        undo()
        undo_quiet()
        loop.max_epochs, trainer.check_val_every_n_epoch = saved_loop
    if finder is None:  # Lightning skips the test under fast_dev_run
        raise ConfigError("tune.name", "lr_find", "tune=none with trainer.fast_dev_run",
                          "Lightning skips the learning-rate finder in a fast_dev_run")
    lrs = [float(lr) for lr in finder.results.get("lr", [])]
    n = min(len(lrs), len(losses))
    return lrs[:n], losses[:n]


def in_context(err: ConfigError, result: LRFindResult) -> ConfigError:
    """``err`` (e.g. a schedule's ``lr_final`` above the initial lr) saying that the lr came from the test."""
    note = f"optimizer.lr is {result.suggestion:g}, the suggestion of tune=lr_find"
    return ConfigError(err.key, err.value, err.allowed, f"{err.problem}; {note}" if err.problem else note)


def log_result(loggers: list[Any], result: LRFindResult) -> None:
    """Give the loggers the suggestion: as hyperparameters (``lr_find.*``) and as a metric at step 0."""
    for logger in loggers:
        logger.log_hyperparams({"lr_find": result.as_dict()})
        logger.log_metrics({"lr_find/suggestion": result.suggestion}, step=0)
