"""The pure learning-rate formulas: ``(s, horizon, lr0, **params) -> lr``, their registry, and warmup.

Conventions used throughout the schedules:

* ``t`` is the number of optimizer steps taken so far (0 at the start); the lr used by optimizer step ``t``
  is ``lr(t)``. ``T`` is the number of optimizer steps of the whole run.
* Warmup ``W`` composes with every schedule: for ``t < W``, ``lr(t) = lr0 * (t + 1) / W`` (reaching ``lr0``
  at ``t = W - 1``); for ``t >= W`` the main schedule runs on ``s = t - W`` over the horizon ``Tm = T - W``.
  ``s`` is clamped to ``Tm``, so after the end of training the final lr is held.

What lives here: one function per schedule (its formula in its docstring), :data:`SCHEDULES` (config name
-> function) and :func:`lr_at` (warmup + main schedule). The functions return the absolute lr and do no
validation. What does not: reading and checking parameters from config
(:mod:`lightopt.core.schedules.params`), the schedulers that apply a formula to an optimizer
(:mod:`lightopt.core.schedules.schedulers`) and building them from a config section
(:mod:`lightopt.core.schedules.factory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from lightopt.errors import ConfigError

__all__ = [
    "SCHEDULES",
    "constant",
    "cosine",
    "cosine_restarts",
    "exponential",
    "inverse_sqrt",
    "linear",
    "lr_at",
    "multistep_decay",
    "onecycle",
    "polynomial",
    "step_decay",
    "wsd",
]


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


def _cycle_start(i: int, length: int, mult: float) -> Fraction:
    """Step at which cycle ``i`` starts, ``L * (1 + m + ... + m^(i-1))``, exactly: ``m`` as the decimal the config
    gave, so that a boundary on a whole step (7 * 1.3 = 9.1 after 7) is not missed by a rounding error."""
    m = Fraction(str(mult))
    return Fraction(length * i) if m == 1 else length * (m**i - 1) / (m - 1)


def _cycle_of(s: int, length: int, mult: float) -> int:
    """The cycle holding step ``s``: the largest ``i`` with ``start(i) <= s``."""
    if mult == 1.0:
        return s // length
    i = int(math.log1p(s * (mult - 1.0) / length) / math.log(mult))  # then fixed up exactly
    while _cycle_start(i + 1, length, mult) <= s:
        i += 1
    while i > 0 and _cycle_start(i, length, mult) > s:
        i -= 1
    return i


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
    restart. At and past the horizon (``s >= Tm``) it holds the value the run ends on: a restart falling on
    ``Tm`` is not taken.
    """
    s = min(s, horizon)
    i = _cycle_of(s, cycle_steps, cycle_mult)
    start = _cycle_start(i, cycle_steps, cycle_mult)
    if s == horizon and i > 0 and start == s:
        i -= 1
        start = _cycle_start(i, cycle_steps, cycle_mult)
    u = float(s - start)
    length = cycle_steps * cycle_mult**i
    peak = max(lr0 * cycle_decay**i, min_lr)
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * min(u, length) / length))


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
    """Smith's 1cycle, step for step ``torch.optim.lr_scheduler.OneCycleLR(total_steps=Tm)``; ``lr0`` is the peak.

    With the peak at ``P = pct_start * Tm - 1`` (a real number of steps) the lr rises from ``lr0 / div_factor`` at
    ``s = 0`` to ``lr0`` at ``s = P``, then falls to ``lr0 / (div_factor * final_div_factor)`` at ``s = Tm - 1``,
    the last step a run of ``Tm`` steps takes, and holds it after. Both phases follow ``anneal``: ``cos``
    (``b + (a - b) * (1 + cos(pi * x)) / 2`` from ``a`` to ``b``, ``x`` the phase progress in ``[0, 1]``) or
    ``linear`` (``a + (b - a) * x``).
    """
    peak = pct_start * horizon - 1.0
    start = lr0 / div_factor
    if 0 < peak and s <= peak:
        return _anneal(start, lr0, s / peak, anneal)
    last = horizon - 1
    return _anneal(lr0, start / final_div_factor, min(1.0, (s - peak) / (last - peak)), anneal)


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
"""Config name -> pure schedule function. ``plateau`` is not a function of the step: see
:class:`lightopt.core.schedules.schedulers.PlateauLR`."""


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
