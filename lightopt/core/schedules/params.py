"""Schedule parameters from config: step counts, the horizon, warmup, and each schedule's own checks.

Step counts in the config (``warmup``, ``step_size``, ``milestones``, ``timescale``, ``cycle_steps``,
``decay``) are an int number of optimizer steps or a float fraction of ``T`` in ``[0, 1)``; see
:func:`to_steps`. Step counts other than ``warmup`` are counted on ``s``, i.e. from the end of warmup.

What lives here: :func:`to_steps` and the other checks of single schedule values, :func:`read_params` (a
schedule's own keys from its section, unknown keys rejected) and :data:`CHECKS` (config name -> the check
of that schedule's parameters, converting step counts to ints). Checks of plain numbers come from
:mod:`lightopt.checks`. What does not: the formulas (:mod:`lightopt.core.schedules.formulas`) and building
a scheduler from a section (:mod:`lightopt.core.schedules.factory`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lightopt.checks import is_real, number, one_of
from lightopt.core.schedules.formulas import wsd
from lightopt.errors import ConfigError

__all__ = [
    "CHECKS",
    "COMMON_KEYS",
    "EXCLUSIVE_PARAMS",
    "PLATEAU_KEYS",
    "Check",
    "horizon_steps",
    "no_check",
    "param_names",
    "plain",
    "positive_steps",
    "read_params",
    "target_lr",
    "to_steps",
    "warmup_steps",
]

#: Keys of every schedule section, whatever the schedule.
COMMON_KEYS = ("name", "warmup", "total_steps")
#: The parameters of ``plateau`` (besides ``monitor``, which the caller reads).
PLATEAU_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr")
#: Per schedule, groups of parameters of which exactly one is given (the others null).
EXCLUSIVE_PARAMS: dict[str, tuple[tuple[str, ...], ...]] = {"exponential": (("decay_rate", "lr_final"),)}

_FACTOR = "a number in (0, 1]"


def to_steps(value: Any, total_steps: int, key: str) -> int:
    """A step count from config: an int number of optimizer steps, or a float fraction of ``T``.

    Ints (and whole floats >= 1, e.g. ``100.0``) are steps; floats in ``[0, 1)`` are a fraction of
    ``total_steps``, rounded to the nearest step (halves up). Raises :class:`ConfigError` for anything else
    (negatives, bools, NaN, non-numbers, non-whole floats >= 1).
    """
    allowed = f"an int number of optimizer steps >= 0 or a fraction of T={total_steps} in [0, 1)"
    if not is_real(value):
        raise ConfigError(key, value, allowed, "not a number")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ConfigError(key, value, allowed, "negative")
        return int(value)
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(key, value, allowed, "negative" if value < 0 else "not finite")
    if value < 1.0:
        return int(math.floor(value * total_steps + 0.5))
    if value.is_integer():
        return int(value)
    raise ConfigError(key, value, allowed, "a float >= 1 must be a whole number of steps")


def positive_steps(value: Any, total_steps: int, key: str) -> int:
    """:func:`to_steps` for counts that must be >= 1; a positive fraction never rounds down to 0 steps."""
    n = to_steps(value, total_steps, key)
    if n == 0:
        if isinstance(value, float) and value > 0:
            return 1
        raise ConfigError(key, value, f"an int number of optimizer steps >= 1 or a fraction of T={total_steps} "
                          "in (0, 1)", "must be at least one step")
    return n


def target_lr(key: str, value: Any, lr0: float, positive: bool = False) -> float:
    """A target lr (``lr_final``, ``min_lr``): in ``[0, lr0]`` (``(0, lr0]`` when ``positive``)."""
    allowed = f"a number in {'(' if positive else '['}0, {lr0:g}] (at most the optimizer lr)"
    v = number(key, value, allowed, finite=False)
    if v > lr0:
        raise ConfigError(key, value, allowed, f"above the initial lr {lr0:g}")
    if v < 0 or (positive and v == 0):
        raise ConfigError(key, value, allowed, "must be > 0" if positive else "negative")
    return v


def horizon_steps(value: Any) -> int:
    """The horizon ``T`` (``schedule.total_steps`` or the trainer's estimate) as an int >= 1."""
    key = "schedule.total_steps"
    if value is None or (is_real(value) and math.isinf(value)):
        raise ConfigError(key, value, "a finite number of optimizer steps; set trainer.max_epochs or "
                          "trainer.max_steps", "the training horizon is unknown")
    if not is_real(value) or math.isnan(value) or float(value) != int(value) or value < 1:
        raise ConfigError(key, value, "an int number of optimizer steps >= 1")
    return int(value)


def warmup_steps(cfg: Mapping[str, Any], total: int | None) -> int:
    """``schedule.warmup`` in steps, shorter than training; a fraction needs a known horizon ``total``."""
    value = cfg.get("warmup")
    if value is None:
        return 0
    if total is None:
        if is_real(value) and isinstance(value, float) and 0 < value < 1:
            horizon_steps(None)  # a fraction of an unknown horizon
        total = 0
    steps = to_steps(value, total, "schedule.warmup")
    if total and steps >= total:
        raise ConfigError("schedule.warmup", value, f"an int number of steps < T={total} or a fraction in [0, 1)",
                          "warmup is longer than training")
    return steps


def plain(value: Any) -> Any:
    """``value`` with OmegaConf containers turned into (resolved) dicts and lists."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def param_names(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword parameters of ``fn`` after ``(s, horizon, lr0)``, and whether it takes ``**kwargs``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params[3:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def read_params(cfg: Mapping[str, Any], allowed: Sequence[str], any_key: bool, name: str) -> dict[str, Any]:
    """The schedule's own params from ``cfg`` (unset/null ones left out); unknown keys raise."""
    params = {}
    for key in cfg.keys():
        if key in COMMON_KEYS or (name == "plateau" and key == "monitor"):
            continue
        if key not in allowed and not any_key:
            keys = ", ".join([*COMMON_KEYS, *(["monitor"] if name == "plateau" else []), *allowed])
            raise ConfigError(f"schedule.{key}", plain(cfg[key]), f"keys of schedule {name}: {keys}",
                              "unknown key")
        value = plain(cfg[key])
        if value is not None:
            params[key] = value
    return params


# Per-schedule checks: (params given in the config, T, Tm, lr0) -> params for the function, with step counts
# converted to ints. Only keys present in the config are checked; the rest are the function's defaults.
Check = Callable[[dict[str, Any], int, int, float], dict[str, Any]]


def _check_exponential(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    rate, final = p.get("decay_rate"), p.get("lr_final")
    if (rate is None) == (final is None):
        raise ConfigError(
            "schedule.decay_rate", rate,
            "exactly one of schedule.decay_rate (a per-step decay in (0, 1)) and schedule.lr_final "
            f"(the lr at the end, in (0, {lr0:g}]); set the other to null",
            f"schedule.lr_final={final!r} " + ("is also set" if rate is not None else "is not set either"),
        )
    if rate is not None:
        p["decay_rate"] = number("schedule.decay_rate", rate, "a number in (0, 1)", low=0.0, high=1.0,
                                 low_open=True, high_open=True)
    else:
        # exponential decay never reaches 0
        p["lr_final"] = target_lr("schedule.lr_final", final, lr0, positive=True)
    return p


def _check_lr_final(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "lr_final" in p:
        p["lr_final"] = target_lr("schedule.lr_final", p["lr_final"], lr0)
    return p


def _check_min_lr(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "min_lr" in p:
        p["min_lr"] = target_lr("schedule.min_lr", p["min_lr"], lr0)
    return p


def _check_gamma(p: dict[str, Any], key: str = "gamma") -> None:
    if key in p:
        p[key] = number(f"schedule.{key}", p[key], _FACTOR, low=0.0, high=1.0, low_open=True)


def _required_steps(p: dict[str, Any], T: int, key: str) -> None:
    if key not in p:
        raise ConfigError(f"schedule.{key}", None, "an int number of steps >= 1 or a fraction of T in (0, 1)",
                          "missing")
    p[key] = positive_steps(p[key], T, f"schedule.{key}")


def _check_step(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    _required_steps(p, T, "step_size")
    _check_gamma(p)
    return p


def _check_multistep(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    allowed = (f"a list of step counts (ints, or fractions of T={T} in [0, 1)) counted from the end of warmup, "
               f"each <= {Tm}")
    ms = p.get("milestones")
    if ms is None or isinstance(ms, (str, bytes)) or not isinstance(ms, Sequence):
        raise ConfigError("schedule.milestones", ms, allowed, "not a list")
    steps = [to_steps(m, T, "schedule.milestones") for m in ms]
    late = [m for m, n in zip(ms, steps, strict=True) if n > Tm]
    if late:
        raise ConfigError("schedule.milestones", list(ms), allowed, f"{late[0]!r} is after the end of training")
    p["milestones"] = tuple(sorted(steps))
    _check_gamma(p)
    return p


def _check_polynomial(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "power" in p:
        p["power"] = number("schedule.power", p["power"], "a number > 0", low=0.0, low_open=True, finite=False)
    return _check_lr_final(p, T, Tm, lr0)


def _check_cosine_restarts(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    _required_steps(p, T, "cycle_steps")
    if "cycle_mult" in p:
        p["cycle_mult"] = number("schedule.cycle_mult", p["cycle_mult"], "a number >= 1", low=1.0, finite=False)
    _check_gamma(p, "cycle_decay")
    return _check_min_lr(p, T, Tm, lr0)


def _check_onecycle(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "pct_start" in p:
        p["pct_start"] = number("schedule.pct_start", p["pct_start"], "a fraction in [0, 1)", low=0.0, high=1.0,
                                high_open=True)
    for key in ("div_factor", "final_div_factor"):
        if key in p:
            p[key] = number(f"schedule.{key}", p[key], "a number >= 1", low=1.0, finite=False)
    if "anneal" in p:
        p["anneal"] = one_of("schedule.anneal", p["anneal"], ("cos", "linear"))
    return p


def _check_inverse_sqrt(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    _required_steps(p, T, "timescale")
    return p


def _check_wsd(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    # the default is a fraction too, and must become steps of T here, not of Tm in the function
    decay = p.get("decay", inspect.signature(wsd).parameters["decay"].default)
    d = to_steps(decay, T, "schedule.decay")
    if d > Tm:
        raise ConfigError("schedule.decay", decay,
                          f"at most the {Tm} steps after warmup (T={T})", "decay is longer than training")
    p["decay"] = d
    if "decay_shape" in p:
        p["decay_shape"] = one_of("schedule.decay_shape", p["decay_shape"], ("linear", "cosine", "sqrt"))
    return _check_lr_final(p, T, Tm, lr0)


def no_check(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    """The check of a schedule without constrained parameters (and of user functions): none."""
    return p


CHECKS: dict[str, Check] = {
    "constant": no_check,
    "exponential": _check_exponential,
    "linear": _check_lr_final,
    "step": _check_step,
    "multistep": _check_multistep,
    "polynomial": _check_polynomial,
    "cosine": _check_min_lr,
    "cosine_restarts": _check_cosine_restarts,
    "onecycle": _check_onecycle,
    "inverse_sqrt": _check_inverse_sqrt,
    "wsd": _check_wsd,
}
"""Config name -> the check of that schedule's parameters (only keys present in the config are checked)."""
