"""Use lightopt from any LightningModule: config in, ``configure_optimizers`` return value out.

    def configure_optimizers(self):
        return lightopt.configure_optimizers(self, self.cfg)

:func:`configure_optimizers` builds the optimizer (param groups, weight-decay exclusion, lr multipliers)
from ``cfg.optimizer`` / ``cfg.regularization`` and the LR schedule from ``cfg.schedule``, stepping per
optimizer step over ``trainer.estimated_stepping_batches``. :class:`LightoptMixin` does the same for
modules that keep their config in ``self.lightopt_cfg`` and adds the explicit L1/L2 penalty.
Partial sections are completed from the shipped config files (:mod:`lightopt.core.defaults`). How optimizers
and schedules are built lives in :mod:`lightopt.core.optimizers` and :mod:`lightopt.core.schedules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightopt.checks import is_real
from lightopt.core import schedule_free
from lightopt.core.defaults import complete_section
from lightopt.core.optimizers import create_optimizer
from lightopt.core.regularization import Penalty, build_penalty
from lightopt.core.schedules.factory import create_scheduler
from lightopt.core.schedules.schedulers import PlateauLR
from lightopt.errors import ConfigError


def _section(cfg: Any, key: str) -> Any:
    if cfg is None:
        return None
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _complete(group: str, given: Mapping | None, cfg: Any) -> dict[str, Any] | None:
    """Section ``group``: the keyword argument when given, else ``cfg``'s; completed from the shipped files."""
    return complete_section(group, given if given is not None else _section(cfg, group), cfg)


def training_horizon(module: L.LightningModule) -> int | float | None:
    """Optimizer steps of the whole run, from ``trainer.estimated_stepping_batches``.

    That count already accounts for gradient accumulation, devices, ``max_epochs``/``max_steps`` and
    ``limit_train_batches``. It is ``inf`` for an unbounded run and ``None`` without a trainer: schedules
    that need a horizon then raise.
    """
    trainer = module._trainer
    return None if trainer is None else trainer.estimated_stepping_batches


def configure_optimizers(
    module: L.LightningModule,
    cfg: Any = None,
    *,
    optimizer: Mapping | None = None,
    schedule: Mapping | None = None,
    regularization: Mapping | None = None,
    lr_multipliers: Mapping[str, float] | None = None,
    lr_layer_decay: float | None = None,
    total_steps: int | None = None,
    model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Build what ``LightningModule.configure_optimizers`` returns.

    Args:
        module: the LightningModule whose parameters are optimized (attached to a trainer when a schedule
            needs the training horizon).
        cfg: a config with ``optimizer``, ``schedule``, ``regularization``, ``lr_multipliers`` and
            ``lr_layer_decay`` sections;
            the keyword arguments override single sections. A section may be partial: the keys it lacks
            come from the shipped config files (:func:`lightopt.core.defaults.complete_section`), e.g.
            ``{"_target_": "torch.optim.AdamW"}`` takes the lr of ``conf/optimizer/adamw.yaml`` and
            ``{"name": "cosine_restarts"}`` the cycle of ``conf/schedule/cosine_restarts.yaml``.
            Interpolations there resolve against ``cfg`` (plateau's ``monitor: ${objective.metric}``).
        total_steps: the horizon T in optimizer steps; default ``schedule.total_steps`` or else
            ``trainer.estimated_stepping_batches``.
        model: the sub-module whose parameters are optimized (default: ``module``); parameter names in
            ``lr_multipliers`` are relative to it.

    Returns:
        ``{"optimizer": opt}`` without a schedule, else
        ``{"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 1, ...}}``,
        with ``"monitor"`` naming the watched metric for ``plateau``.
    """
    optimizer = _complete("optimizer", optimizer, cfg)
    schedule = _complete("schedule", schedule, cfg)
    regularization = _complete("regularization", regularization, cfg)
    lr_multipliers = lr_multipliers if lr_multipliers is not None else _section(cfg, "lr_multipliers")
    lr_layer_decay = lr_layer_decay if lr_layer_decay is not None else _section(cfg, "lr_layer_decay")
    if optimizer is None:
        raise ConfigError("optimizer", None, "an optimizer config with _target_ and lr", "missing")

    opt = create_optimizer(
        model if model is not None else module, optimizer, regularization=regularization, lr_multipliers=lr_multipliers,
        lr_layer_decay=lr_layer_decay,
    )
    if schedule_free.is_schedule_free(opt):  # its train/eval modes switched by a callback on the module's trainer
        schedule_free.check_schedule(opt, schedule)
        schedule_free.serve(module._trainer, opt)
    if schedule is None:
        return {"optimizer": opt}

    if total_steps is None and schedule.get("total_steps") is None:
        total_steps = training_horizon(module)
    elif schedule.get("name") not in ("constant", "plateau"):
        _check_covers_run(module, schedule, total_steps)
    scheduler = create_scheduler(opt, schedule, total_steps)
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
    if isinstance(scheduler, PlateauLR):
        # Not Lightning's reduce_on_plateau stepping: with interval "step" it would pass the same stale
        # value every step (patience counted in steps) and skip steps before the first validation
        # (freezing warmup). The scheduler reads the metric itself, once per new value.
        monitor = schedule.get("monitor")
        if not monitor:
            raise ConfigError("schedule.monitor", monitor, "the name of a logged metric, e.g. val/loss")
        scheduler.watch(_metric_reader(module, monitor))
        config["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": config}


def _check_covers_run(module: L.LightningModule, schedule: Mapping, total_steps: int | None) -> None:
    """A horizon given explicitly spans the whole run: past it the lr would stay at its final value (often 0)."""
    key, given = ("schedule.total_steps", schedule["total_steps"]) if schedule.get("total_steps") is not None \
        else ("total_steps", total_steps)
    run_steps = training_horizon(module)
    if is_real(given) and run_steps is not None and math.isfinite(run_steps) and given < run_steps:
        raise ConfigError(key, given, f"null (the run's own length: {int(run_steps)} optimizer steps) or at least "
                          f"{int(run_steps)}", f"shorter than the run: the lr would stay at its final value for the "
                          f"last {int(run_steps - given)} steps")


def _metric_reader(module: L.LightningModule, key: str) -> Callable[[], Tensor | None]:
    def read() -> Tensor | None:
        trainer = module._trainer
        return None if trainer is None else trainer.callback_metrics.get(key)

    return read


class LightoptMixin:
    """Mixin for a LightningModule holding its lightopt config in ``self.lightopt_cfg``.

    Provides ``configure_optimizers`` and :meth:`penalty` (the explicit L1/L2 term of
    ``regularization.l1_penalty`` / ``l2_penalty``, zero when both are zero): add it to your loss.
    """

    lightopt_cfg: Any

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(self, self.lightopt_cfg)  # type: ignore[arg-type]

    def penalty(self) -> Tensor | float:
        if not hasattr(self, "_lightopt_penalty"):
            reg = _section(self.lightopt_cfg, "regularization")
            self._lightopt_penalty: Penalty | None = build_penalty(self, reg) if reg is not None else None
        pen = self._lightopt_penalty
        return pen() if pen else 0.0
