"""From a ``schedule`` config section to a scheduler: the name, the horizon, warmup and parameters, checked.

What lives here: :func:`create_scheduler` (section -> :class:`ScheduledLR` or :class:`PlateauLR`) and
:func:`build_lr_fn` (section -> the validated ``lr(t)``), and resolving ``schedule.name`` to a registered or
importable function. What does not: the formulas (:mod:`lightopt.core.schedules.formulas`), the checks of
single parameters (:mod:`lightopt.core.schedules.params`), the schedulers themselves
(:mod:`lightopt.core.schedules.schedulers`), filling a partial section from the shipped config files
(:mod:`lightopt.core.defaults`) and finding the training horizon (:mod:`lightopt.core.plugin`).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from lightopt.checks import is_real
from lightopt.core.schedules.formulas import SCHEDULES, lr_at
from lightopt.core.schedules.params import (
    CHECKS,
    PLATEAU_KEYS,
    Check,
    horizon_steps,
    no_check,
    param_names,
    read_params,
    warmup_steps,
)
from lightopt.core.schedules.schedulers import PlateauLR, ScheduledLR, base_lr
from lightopt.errors import ConfigError

__all__ = ["build_lr_fn", "create_scheduler"]


def _import_fn(name: str) -> Callable[..., float]:
    module_name, _, attr = name.rpartition(".")
    allowed = "a function importable as package.module.function with signature (s, horizon, lr0, **params)"
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError("schedule.name", name, allowed, f"cannot import it ({e})") from e
    if not callable(fn):
        raise ConfigError("schedule.name", name, allowed, "not callable")
    return fn


def _resolve_name(name: Any) -> tuple[Callable[..., float], Check]:
    if isinstance(name, str) and name in SCHEDULES:
        return SCHEDULES[name], CHECKS.get(name, no_check)
    if isinstance(name, str) and "." in name:
        return _import_fn(name), no_check
    names = ", ".join([*SCHEDULES, "plateau"])
    raise ConfigError("schedule.name", name, f"one of {names}, or a dotted path to a function", "unknown schedule")


def build_lr_fn(cfg: Mapping[str, Any], total_steps: int | float | None, lr0: float) -> Callable[[int], float]:
    """The validated absolute ``lr(t)`` (warmup included) of a function schedule config.

    Takes the same ``cfg`` and ``total_steps`` as :func:`create_scheduler`; not for ``plateau``.
    """
    name = cfg.get("name")
    fn, check = _resolve_name(name)
    total = horizon_steps(cfg.get("total_steps") if cfg.get("total_steps") is not None else total_steps)
    warmup = warmup_steps(cfg, total)
    names, any_key = param_names(fn)
    params = read_params(cfg, sorted(names), any_key, str(name))
    params = check(params, total, total - warmup, lr0)
    return functools.partial(lr_at, total_steps=total, lr0=lr0, warmup_steps=warmup, fn=fn, **params)


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int | float | None
) -> LRScheduler:
    """Build the scheduler of the ``schedule`` config section for ``optimizer``.

    Args:
        optimizer: its ``defaults["lr"]`` is ``lr0``; each param group is scaled from its own lr.
        cfg: ``name`` (a key of :data:`SCHEDULES`, ``plateau``, or ``package.module.function``), ``warmup``,
            ``total_steps`` (overrides the argument when not null) and the schedule's own params.
            ``plateau`` also allows ``monitor`` (read by the caller, not here).
        total_steps: the horizon ``T`` in optimizer steps, used when ``cfg.total_steps`` is null.

    Returns:
        :class:`ScheduledLR` for function schedules, :class:`PlateauLR` for ``plateau``, to be stepped once
        per optimizer step. ``plateau`` needs no horizon unless its warmup is a fraction.

    Raises:
        ConfigError: for an unknown name or key, an unknown or infinite horizon, a warmup as long as
            training, or any parameter out of range.
    """
    name = cfg.get("name")
    lr0 = base_lr(optimizer)
    if not math.isfinite(lr0) or lr0 <= 0:
        raise ConfigError("optimizer.lr", lr0, "a number > 0", "a schedule scales the optimizer lr")
    if name == "plateau":
        given = cfg.get("total_steps") if cfg.get("total_steps") is not None else total_steps
        total = None if given is None or (is_real(given) and math.isinf(given)) else horizon_steps(given)
        params = read_params(cfg, PLATEAU_KEYS, False, "plateau")
        return PlateauLR(optimizer, warmup_steps=warmup_steps(cfg, total), **params)
    lr_fn = build_lr_fn(cfg, total_steps, lr0)
    return ScheduledLR(optimizer, lambda t: lr_fn(t) / lr0)
