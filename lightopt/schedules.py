"""Learning-rate schedules: pure formulas, the schedulers that apply them, and building both from config.

Conventions used throughout:

* ``t`` is the number of optimizer steps taken so far (0 at the start); the lr used by optimizer step ``t``
  is ``lr(t)``. ``T`` is the number of optimizer steps of the whole run.
* Warmup ``W`` composes with every schedule: for ``t < W``, ``lr(t) = lr0 * (t + 1) / W`` (reaching ``lr0``
  at ``t = W - 1``); for ``t >= W`` the main schedule runs on ``s = t - W`` over the horizon ``Tm = T - W``.
  ``s`` is clamped to ``Tm``, so after the end of training the final lr is held.
* Step counts in the config (``warmup``, ``step_size``, ``milestones``, ``timescale``, ``cycle_steps``,
  ``decay``) are an int number of optimizer steps or a float fraction of ``T`` in ``[0, 1)``; see
  :func:`to_steps`. Step counts other than ``warmup`` are counted on ``s``, i.e. from the end of warmup.

What lives here: the pure schedule functions (``(s, horizon, lr0, **params) -> lr``, registered in
:data:`SCHEDULES`), :func:`lr_at` (warmup + main schedule), :class:`ScheduledLR` (applies any such function
to every param group, keeping their lr ratios), :class:`PlateauLR` (reduce-on-plateau with warmup) and
:func:`create_scheduler` (config section ``schedule`` -> scheduler, validating every value). What does not:
building the optimizer and its param groups (:mod:`lightopt.optimizers`), finding the training horizon and
feeding the monitored metric to :class:`PlateauLR` (:mod:`lightopt.plugin`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from lightopt.errors import ConfigError

__all__ = [
    "SCHEDULES",
    "PlateauLR",
    "ScheduledLR",
    "build_lr_fn",
    "constant",
    "cosine",
    "cosine_restarts",
    "create_scheduler",
    "exponential",
    "inverse_sqrt",
    "linear",
    "lr_at",
    "multistep_decay",
    "onecycle",
    "polynomial",
    "step_decay",
    "to_steps",
    "wsd",
]

# ---------------------------------------------------------------------------------------------------------
# Pure schedule functions: s = steps since the end of warmup, horizon = Tm, lr0 = the configured lr.
# They return the absolute lr and do no validation (create_scheduler validates once, at build time).
# ---------------------------------------------------------------------------------------------------------


def constant(s: int, horizon: int, lr0: float) -> float:
    """``lr(s) = lr0``."""
    return lr0


def exponential(
    s: int, horizon: int, lr0: float, decay_rate: float | None = None, lr_final: float | None = None
) -> float:
    """``lr(s) = lr0 * (1 - a)^s``.

    Give exactly one of ``decay_rate`` (``a`` in ``(0, 1)``) or ``lr_final`` (in ``(0, lr0]``); with
    ``lr_final``, ``a = 1 - (lr_final / lr0)^(1 / Tm)`` so that ``lr(Tm) = lr_final``.
    """
    if (decay_rate is None) == (lr_final is None):
        raise ConfigError(
            "schedule.decay_rate", decay_rate, "exactly one of schedule.decay_rate and schedule.lr_final",
            f"schedule.lr_final={lr_final!r}: give exactly one of the two",
        )
    if lr_final is not None:
        # (1 - a)^s with a from lr_final, written without the round trip through a
        return lr0 * (lr_final / lr0) ** (s / horizon)
    return lr0 * (1.0 - decay_rate) ** s


def linear(s: int, horizon: int, lr0: float, lr_final: float = 0.0) -> float:
    """``lr(s) = lr0 - s / Tm * (lr0 - lr_final)``."""
    return lr0 - s / horizon * (lr0 - lr_final)


def step_decay(s: int, horizon: int, lr0: float, step_size: int, gamma: float = 0.1) -> float:
    """Step decay (config name ``step``): ``lr(s) = lr0 * gamma^floor(s / step_size)``."""
    return lr0 * gamma ** (s // step_size)


def multistep_decay(s: int, horizon: int, lr0: float, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """Decay at milestones (config name ``multistep``): ``lr(s) = lr0 * gamma^#{m in milestones : m <= s}``."""
    return lr0 * gamma ** sum(1 for m in milestones if m <= s)


def polynomial(s: int, horizon: int, lr0: float, power: float = 1.0, lr_final: float = 0.0) -> float:
    """``lr(s) = lr_final + (lr0 - lr_final) * (1 - s / Tm)^power``.

    ``power = 1`` is :func:`linear`; ``power = 0.5`` decays fast at the end, ``power = 2`` fast at the start.
    (The form ``lr0 * (1 - s/Tm)^(1/p)`` found elsewhere is this one with ``power = 1/p``.)
    """
    return lr_final + (lr0 - lr_final) * (1.0 - s / horizon) ** power


def cosine(s: int, horizon: int, lr0: float, min_lr: float = 0.0) -> float:
    """``lr(s) = min_lr + (lr0 - min_lr) * (1 + cos(pi * s / Tm)) / 2``."""
    return min_lr + 0.5 * (lr0 - min_lr) * (1.0 + math.cos(math.pi * s / horizon))


def _cycle_start(i: int, length: float, mult: float) -> float:
    """Step at which cycle ``i`` starts: ``L * (1 + m + ... + m^(i-1))``."""
    return length * i if mult == 1.0 else length * (mult**i - 1.0) / (mult - 1.0)


def cosine_restarts(
    s: int,
    horizon: int,
    lr0: float,
    cycle_steps: int,
    cycle_mult: float = 1.0,
    cycle_decay: float = 1.0,
    min_lr: float = 0.0,
) -> float:
    """Cosine with warm restarts (SGDR).

    Cycle ``i = 0, 1, ...`` is ``L_i = cycle_steps * cycle_mult^i`` steps long and peaks at
    ``p_i = max(lr0 * cycle_decay^i, min_lr)``; inside a cycle, at position ``u`` (steps since its start),
    ``lr = min_lr + (p_i - min_lr) * (1 + cos(pi * u / L_i)) / 2``. The lr jumps back to ``p_i`` at each
    restart.
    """
    if cycle_mult == 1.0:
        i = s // cycle_steps
    else:
        # closed form, then fixed up against float error at the cycle boundaries
        i = int(math.log1p(s * (cycle_mult - 1.0) / cycle_steps) / math.log(cycle_mult))
        while _cycle_start(i + 1, cycle_steps, cycle_mult) <= s:
            i += 1
        while i > 0 and _cycle_start(i, cycle_steps, cycle_mult) > s:
            i -= 1
    u = s - _cycle_start(i, cycle_steps, cycle_mult)
    length = cycle_steps * cycle_mult**i
    peak = max(lr0 * cycle_decay**i, min_lr)
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * u / length))


def _anneal(start: float, end: float, progress: float, shape: str) -> float:
    if shape == "cos":
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))
    return start + (end - start) * progress


def onecycle(
    s: int,
    horizon: int,
    lr0: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
) -> float:
    """Smith's 1cycle; ``lr0`` is the peak.

    With ``R = round(pct_start * Tm)`` rise steps (halves up), the lr goes from ``lr0 / div_factor`` at ``s = 0`` up to
    ``lr0`` at ``s = R``, then down to ``lr0 / (div_factor * final_div_factor)`` at ``s = Tm``. Both phases
    follow ``anneal``: ``cos`` (``b + (a - b) * (1 + cos(pi * x)) / 2`` from ``a`` to ``b``, ``x`` the phase
    progress in ``[0, 1]``) or ``linear`` (``a + (b - a) * x``).
    """
    rise = math.floor(pct_start * horizon + 0.5)
    start = lr0 / div_factor
    if s < rise:
        return _anneal(start, lr0, s / rise, anneal)
    return _anneal(lr0, start / final_div_factor, (s - rise) / (horizon - rise), anneal)


def inverse_sqrt(s: int, horizon: int, lr0: float, timescale: int) -> float:
    """``lr(s) = lr0 * sqrt(tau / (s + tau))`` with ``tau = timescale`` steps (``lr0`` at ``s = 0``)."""
    return lr0 * math.sqrt(timescale / (s + timescale))


def wsd(
    s: int, horizon: int, lr0: float, decay: float = 0.2, lr_final: float = 0.0, decay_shape: str = "linear"
) -> float:
    """Warmup-stable-decay: ``lr0`` until the last ``D`` steps, then down to ``lr_final`` at ``Tm``.

    With ``x = (s - (Tm - D)) / D`` the decay progress, ``lr = lr_final + (lr0 - lr_final) * f(x)``, where
    ``f(x) = 1 - x`` (``linear``), ``(1 + cos(pi * x)) / 2`` (``cosine``) or ``1 - sqrt(x)`` (``sqrt``).
    ``decay`` is ``D`` in steps; called directly, a ``decay < 1`` is a fraction of the horizon ``Tm``
    (from config it is converted beforehand, as a fraction of ``T``). The warmup is the usual ``warmup`` key.
    """
    if decay < 1:
        decay = math.floor(decay * horizon + 0.5)
    begin = horizon - decay
    if s < begin:
        return lr0
    if decay == 0:
        return lr_final
    x = (s - begin) / decay
    if decay_shape == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * x))
    elif decay_shape == "sqrt":
        f = 1.0 - math.sqrt(x)
    else:
        f = 1.0 - x
    return lr_final + (lr0 - lr_final) * f


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "exponential": exponential,
    "linear": linear,
    "step": step_decay,
    "multistep": multistep_decay,
    "polynomial": polynomial,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "onecycle": onecycle,
    "inverse_sqrt": inverse_sqrt,
    "wsd": wsd,
}
"""Config name -> pure schedule function. ``plateau`` is not a function of the step: see :class:`PlateauLR`."""

PLATEAU_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr")
_COMMON_KEYS = ("name", "warmup", "total_steps")


def lr_at(
    t: int, total_steps: int, lr0: float, warmup_steps: int, fn: Callable[..., float], **params: Any
) -> float:
    """The lr of optimizer step ``t``: linear warmup, then ``fn(s, Tm, lr0, **params)``.

    ``lr(t) = lr0 * (t + 1) / W`` for ``t < W``, else ``fn(min(t - W, Tm), Tm, lr0)`` with ``Tm = T - W``.
    """
    if t < warmup_steps:
        return lr0 * (t + 1) / warmup_steps
    horizon = total_steps - warmup_steps
    return fn(min(t - warmup_steps, horizon), horizon, lr0, **params)


# ---------------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------------


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def to_steps(value: Any, total_steps: int, key: str) -> int:
    """A step count from config: an int number of optimizer steps, or a float fraction of ``T``.

    Ints (and whole floats >= 1, e.g. ``100.0``) are steps; floats in ``[0, 1)`` are a fraction of
    ``total_steps``, rounded to the nearest step (halves up). Raises :class:`ConfigError` for anything else
    (negatives, bools, NaN, non-numbers, non-whole floats >= 1).
    """
    allowed = f"an int number of optimizer steps >= 0 or a fraction of T={total_steps} in [0, 1)"
    if not _is_real(value):
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


def _positive_steps(value: Any, total_steps: int, key: str) -> int:
    """:func:`to_steps` for counts that must be >= 1; a positive fraction never rounds down to 0 steps."""
    n = to_steps(value, total_steps, key)
    if n == 0:
        if isinstance(value, float) and value > 0:
            return 1
        raise ConfigError(key, value, f"an int number of optimizer steps >= 1 or a fraction of T={total_steps} "
                          "in (0, 1)", "must be at least one step")
    return n


def _real(
    key: str, value: Any, allowed: str, lo: float | None = None, hi: float | None = None,
    lo_open: bool = False, hi_open: bool = False,
) -> float:
    """``value`` as a float within the bounds, else :class:`ConfigError` with ``allowed``."""
    if not _is_real(value) or math.isnan(value):
        raise ConfigError(key, value, allowed, "not a number")
    v = float(value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(key, value, allowed, "too small")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(key, value, allowed, "too large")
    return v


def _int(key: str, value: Any, allowed: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ConfigError(key, value, allowed)
    return int(value)


def _lr_value(key: str, value: Any, lr0: float, positive: bool = False) -> float:
    """A target lr (``lr_final``, ``min_lr``): in ``[0, lr0]`` (``(0, lr0]`` when ``positive``)."""
    allowed = f"a number in {'(' if positive else '['}0, {lr0:g}] (at most the optimizer lr)"
    if not _is_real(value) or math.isnan(value):
        raise ConfigError(key, value, allowed, "not a number")
    if value > lr0:
        raise ConfigError(key, value, allowed, f"above the initial lr {lr0:g}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(key, value, allowed, "must be > 0" if positive else "negative")
    return float(value)


def _choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(key, value, " | ".join(choices))
    return value


def _gamma(key: str, value: Any) -> float:
    return _real(key, value, "a number in (0, 1]", 0.0, 1.0, lo_open=True)


# Per-schedule checks: (params given in the config, T, Tm, lr0) -> params for the function, with step counts
# converted to ints. Only keys present in the config are checked; the rest are the function's defaults.
_Check = Callable[[dict[str, Any], int, int, float], dict[str, Any]]


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
        p["decay_rate"] = _real("schedule.decay_rate", rate, "a number in (0, 1)", 0.0, 1.0, True, True)
    else:
        # exponential decay never reaches 0
        p["lr_final"] = _lr_value("schedule.lr_final", final, lr0, positive=True)
    return p


def _check_lr_final(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "lr_final" in p:
        p["lr_final"] = _lr_value("schedule.lr_final", p["lr_final"], lr0)
    return p


def _check_min_lr(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "min_lr" in p:
        p["min_lr"] = _lr_value("schedule.min_lr", p["min_lr"], lr0)
    return p


def _check_step(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "step_size" not in p:
        raise ConfigError("schedule.step_size", None, "an int number of steps >= 1 or a fraction of T in (0, 1)",
                          "missing")
    p["step_size"] = _positive_steps(p["step_size"], T, "schedule.step_size")
    if "gamma" in p:
        p["gamma"] = _gamma("schedule.gamma", p["gamma"])
    return p


def _check_multistep(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    allowed = (f"a list of step counts (ints, or fractions of T={T} in [0, 1)) counted from the end of warmup, "
               f"each <= {Tm}")
    ms = p.get("milestones")
    if ms is None or isinstance(ms, (str, bytes)) or not isinstance(ms, Sequence):
        raise ConfigError("schedule.milestones", ms, allowed, "not a list")
    steps = [to_steps(m, T, "schedule.milestones") for m in ms]
    late = [m for m, n in zip(ms, steps) if n > Tm]
    if late:
        raise ConfigError("schedule.milestones", list(ms), allowed, f"{late[0]!r} is after the end of training")
    p["milestones"] = tuple(sorted(steps))
    if "gamma" in p:
        p["gamma"] = _gamma("schedule.gamma", p["gamma"])
    return p


def _check_polynomial(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "power" in p:
        p["power"] = _real("schedule.power", p["power"], "a number > 0", 0.0, lo_open=True)
    return _check_lr_final(p, T, Tm, lr0)


def _check_cosine_restarts(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "cycle_steps" not in p:
        raise ConfigError("schedule.cycle_steps", None,
                          "an int number of steps >= 1 or a fraction of T in (0, 1)", "missing")
    p["cycle_steps"] = _positive_steps(p["cycle_steps"], T, "schedule.cycle_steps")
    if "cycle_mult" in p:
        p["cycle_mult"] = _real("schedule.cycle_mult", p["cycle_mult"], "a number >= 1", 1.0)
    if "cycle_decay" in p:
        p["cycle_decay"] = _gamma("schedule.cycle_decay", p["cycle_decay"])
    return _check_min_lr(p, T, Tm, lr0)


def _check_onecycle(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "pct_start" in p:
        p["pct_start"] = _real("schedule.pct_start", p["pct_start"], "a fraction in [0, 1)", 0.0, 1.0, hi_open=True)
        if math.floor(p["pct_start"] * Tm + 0.5) >= Tm:
            raise ConfigError("schedule.pct_start", p["pct_start"], "a fraction in [0, 1)",
                              f"leaves no steps to anneal over {Tm} steps")
    for key in ("div_factor", "final_div_factor"):
        if key in p:
            p[key] = _real(f"schedule.{key}", p[key], "a number >= 1", 1.0)
    if "anneal" in p:
        p["anneal"] = _choice("schedule.anneal", p["anneal"], ("cos", "linear"))
    return p


def _check_inverse_sqrt(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    if "timescale" not in p:
        raise ConfigError("schedule.timescale", None,
                          "an int number of steps >= 1 or a fraction of T in (0, 1)", "missing")
    p["timescale"] = _positive_steps(p["timescale"], T, "schedule.timescale")
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
        p["decay_shape"] = _choice("schedule.decay_shape", p["decay_shape"], ("linear", "cosine", "sqrt"))
    return _check_lr_final(p, T, Tm, lr0)


def _no_check(p: dict[str, Any], T: int, Tm: int, lr0: float) -> dict[str, Any]:
    return p


_CHECKS: dict[str, _Check] = {
    "constant": _no_check,
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


# ---------------------------------------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------------------------------------


def _base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The configured lr: the optimizer's default (param groups may carry multipliers of it)."""
    lr = optimizer.defaults.get("lr")
    if lr is None:
        lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    return float(lr)


class _ClosedFormLR(LRScheduler):
    """Base of the schedulers here: group lr = its base lr (``initial_lr``) * :meth:`_factor` of the step.

    The lr is computed from ``last_epoch`` and the plain numbers in :meth:`state_dict`, never chained from
    the previous lr, so loading a state dict continues exactly where it left off.
    """

    _STATE_KEYS: tuple[str, ...] = ("last_epoch", "base_lrs", "_last_lr", "_step_count")

    def _factor(self) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # noqa: D102 - closed form, see class docstring
        factor = self._factor()
        return [base * factor for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def _apply(self) -> None:
        """Write the closed-form lrs of the current step into the param groups."""
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(float(lr))
            else:
                group["lr"] = lr
        self._last_lr = [g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"]
                         for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Step counter, base lrs, last lrs and the scheduler's own counters: plain numbers, no functions."""
        return {k: getattr(self, k) for k in self._STATE_KEYS if hasattr(self, k)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the state and set the param groups' lrs for the restored step."""
        for k in self._STATE_KEYS:
            if k in state_dict:
                setattr(self, k, state_dict[k])
        self._apply()


class ScheduledLR(_ClosedFormLR):
    """Sets every param group's lr to its base lr times ``lr_fn(t)``.

    ``lr_fn(t)`` is the factor ``lr(t) / lr0`` (warmup included) for step ``t = last_epoch``; each group's
    base lr is its ``initial_lr``, so groups with lr multipliers keep their ratios. The lr is computed in
    closed form from ``last_epoch``, so loading a :meth:`state_dict` continues exactly where it left off.
    The state dict holds no function: rebuild the scheduler from the same config, then load it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_fn: Callable[[int], float], last_epoch: int = -1) -> None:
        self.lr_fn = lr_fn
        super().__init__(optimizer, last_epoch)

    def _factor(self) -> float:
        return self.lr_fn(self.last_epoch)


class PlateauLR(_ClosedFormLR):
    """Reduce-on-plateau with linear warmup.

    :meth:`step` is called every optimizer step and only advances the warmup; :meth:`observe` is called
    with the monitored metric (once per validation) and may reduce the lr at once. Each group's lr is
    ``base * w(t) * scale`` with ``w(t) = (t + 1) / W`` for ``t < W`` else 1, and ``scale`` starting at 1.

    An observation improves on the best so far when it is below ``best * (1 - threshold)`` (``mode=min``,
    ``threshold_mode=rel``; ``best - threshold`` with ``abs``), or above ``best * (1 + threshold)`` /
    ``best + threshold`` for ``mode=max`` (``rel`` uses ``|best|``, so negative metrics behave). NaN never
    improves. After more than ``patience`` observations in a row without improvement,
    ``scale *= factor`` and the next ``cooldown`` observations are not counted as bad.

    ``min_lr`` is absolute, for the group at the configured lr ``lr0``: ``scale`` never drops below
    ``min_lr / lr0``, so a group with a multiplier ``k`` bottoms out at ``k * min_lr`` (warmup still
    starts below it). Everything that changes (best, counters, scale, step) is in :meth:`state_dict`.
    """

    _STATE_KEYS = (*_ClosedFormLR._STATE_KEYS, "best", "num_bad", "cooldown_counter", "scale", "num_observations")

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        modes = {"min": "min", "minimize": "min", "max": "max", "maximize": "max"}
        if mode not in modes:
            raise ConfigError("schedule.mode", mode, "min | max | minimize | maximize")
        self.mode = modes[mode]
        self.factor = _gamma("schedule.factor", factor)
        self.patience = _int("schedule.patience", patience, "an int number of validations >= 0")
        self.threshold = _real("schedule.threshold", threshold, "a number >= 0", 0.0)
        self.threshold_mode = _choice("schedule.threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _int("schedule.cooldown", cooldown, "an int number of validations >= 0")
        self.lr0 = _base_lr(optimizer)
        self.min_lr = _lr_value("schedule.min_lr", min_lr, self.lr0)
        self.warmup_steps = _int("schedule.warmup", warmup_steps, "an int number of optimizer steps >= 0")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_counter = 0
        self.scale = 1.0
        self.num_observations = 0
        super().__init__(optimizer)

    def _warmup_factor(self, t: int) -> float:
        return (t + 1) / self.warmup_steps if t < self.warmup_steps else 1.0

    def _factor(self) -> float:
        return self._warmup_factor(self.last_epoch) * self.scale

    def is_better(self, value: float) -> bool:
        """Whether ``value`` improves on the best observation so far (see the class docstring)."""
        if math.isnan(value):
            return False
        best = self.best
        if math.isinf(best):
            return value < best if self.mode == "min" else value > best
        margin = self.threshold * abs(best) if self.threshold_mode == "rel" else self.threshold
        return value < best - margin if self.mode == "min" else value > best + margin

    def watch(self, read: Callable[[], Any]) -> None:
        """Take observations from ``read()`` (e.g. a lookup in ``trainer.callback_metrics``) by itself.

        A value counts as new when ``read()`` returns a different object than last time: Lightning stores
        a fresh tensor each time a metric is computed, once per validation for val metrics. New values are
        taken just before each optimizer step (so the lr reacts at the first step after a validation) and
        before :meth:`state_dict` (so a checkpoint saved at the end of a validation already holds it).
        """
        self._read = read
        self._last_read: Any = None
        self.optimizer.register_step_pre_hook(lambda *_: self.poll())

    def poll(self) -> None:
        """Observe the watched metric if it has a new value since the last call."""
        read = getattr(self, "_read", None)
        value = read() if read is not None else None
        if value is not None and value is not self._last_read:
            self._last_read = value
            self.observe(float(value))

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - see watch()
        self.poll()
        return super().state_dict()

    def observe(self, value: float) -> None:
        """Take one value of the monitored metric; reduce the lr now if it has plateaued."""
        value = float(value)
        self.num_observations += 1
        if self.is_better(value):
            self.best = value
            self.num_bad = 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            floor = self.min_lr / self.lr0 if self.lr0 > 0 else 0.0
            self.scale = max(self.scale * self.factor, floor)
            self.cooldown_counter = self.cooldown
            self.num_bad = 0
            self._apply()


# ---------------------------------------------------------------------------------------------------------
# From config
# ---------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _horizon(value: Any) -> int:
    key = "schedule.total_steps"
    if value is None or (_is_real(value) and math.isinf(value)):
        raise ConfigError(key, value, "a finite number of optimizer steps; set trainer.max_epochs or "
                          "trainer.max_steps", "the training horizon is unknown")
    if not _is_real(value) or math.isnan(value) or float(value) != int(value) or value < 1:
        raise ConfigError(key, value, "an int number of optimizer steps >= 1")
    return int(value)


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


def _resolve_name(name: Any) -> tuple[Callable[..., float], _Check]:
    if isinstance(name, str) and name in SCHEDULES:
        return SCHEDULES[name], _CHECKS.get(name, _no_check)
    if isinstance(name, str) and "." in name:
        return _import_fn(name), _no_check
    names = ", ".join([*SCHEDULES, "plateau"])
    raise ConfigError("schedule.name", name, f"one of {names}, or a dotted path to a function", "unknown schedule")


def _param_names(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword parameters of ``fn`` after ``(s, horizon, lr0)``, and whether it takes ``**kwargs``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params[3:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _read_cfg(cfg: Mapping[str, Any], allowed: Sequence[str], any_key: bool, name: str) -> dict[str, Any]:
    """The schedule's own params from ``cfg`` (unset/null ones left out); unknown keys raise."""
    params = {}
    for key in cfg.keys():
        if key in _COMMON_KEYS or (name == "plateau" and key == "monitor"):
            continue
        if key not in allowed and not any_key:
            keys = ", ".join([*_COMMON_KEYS, *(["monitor"] if name == "plateau" else []), *allowed])
            raise ConfigError(f"schedule.{key}", _plain(cfg[key]), f"keys of schedule {name}: {keys}",
                              "unknown key")
        value = _plain(cfg[key])
        if value is not None:
            params[key] = value
    return params


def build_lr_fn(cfg: Mapping[str, Any], total_steps: int | float | None, lr0: float) -> Callable[[int], float]:
    """The validated absolute ``lr(t)`` (warmup included) of a function schedule config.

    Takes the same ``cfg`` and ``total_steps`` as :func:`create_scheduler`; not for ``plateau``.
    """
    name = cfg.get("name")
    fn, check = _resolve_name(name)
    total = _horizon(cfg.get("total_steps") if cfg.get("total_steps") is not None else total_steps)
    warmup = _warmup(cfg, total)
    names, any_key = _param_names(fn)
    params = _read_cfg(cfg, sorted(names), any_key, str(name))
    params = check(params, total, total - warmup, lr0)
    return functools.partial(lr_at, total_steps=total, lr0=lr0, warmup_steps=warmup, fn=fn, **params)


def _warmup(cfg: Mapping[str, Any], total: int | None) -> int:
    value = cfg.get("warmup")
    if value is None:
        return 0
    if total is None:
        if _is_real(value) and isinstance(value, float) and 0 < value < 1:
            _horizon(None)  # a fraction of an unknown horizon
        total = 0
    steps = to_steps(value, total, "schedule.warmup")
    if total and steps >= total:
        raise ConfigError("schedule.warmup", value, f"an int number of steps < T={total} or a fraction in [0, 1)",
                          "warmup is longer than training")
    return steps


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
    lr0 = _base_lr(optimizer)
    if not math.isfinite(lr0) or lr0 <= 0:
        raise ConfigError("optimizer.lr", lr0, "a number > 0", "a schedule scales the optimizer lr")
    if name == "plateau":
        given = cfg.get("total_steps") if cfg.get("total_steps") is not None else total_steps
        total = None if given is None or (_is_real(given) and math.isinf(given)) else _horizon(given)
        params = _read_cfg(cfg, PLATEAU_KEYS, False, "plateau")
        return PlateauLR(optimizer, warmup_steps=_warmup(cfg, total), **params)
    lr_fn = build_lr_fn(cfg, total_steps, lr0)
    return ScheduledLR(optimizer, lambda t: lr_fn(t) / lr0)
