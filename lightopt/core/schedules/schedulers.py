"""The schedulers: apply a learning-rate rule to every param group of an optimizer, in closed form.

What lives here: the closed-form base (each group's lr = its base lr times a factor of the step, recomputed
from plain numbers, so a state dict resumes exactly), :class:`ScheduledLR` (any function of the step) and
:class:`PlateauLR` (reduce-on-plateau with warmup). What does not: the formulas
(:mod:`lightopt.core.schedules.formulas`), reading a config section (:mod:`lightopt.core.schedules.params`,
:mod:`lightopt.core.schedules.factory`) and feeding the monitored metric (:mod:`lightopt.core.plugin`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from lightopt.checks import integer, number, one_of
from lightopt.core.schedules.params import target_lr

__all__ = ["PlateauLR", "ScheduledLR", "base_lr"]

# plateau's mode: the directions of lightopt's objective are accepted too
_MODES = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}


def base_lr(optimizer: torch.optim.Optimizer) -> float:
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
        self.mode = _MODES[one_of("schedule.mode", mode, tuple(_MODES))]
        self.factor = number("schedule.factor", factor, "a number in (0, 1]", low=0.0, high=1.0, low_open=True)
        self.patience = integer("schedule.patience", patience, "an int number of validations >= 0", low=0)
        self.threshold = number("schedule.threshold", threshold, "a number >= 0", low=0.0, finite=False)
        self.threshold_mode = one_of("schedule.threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = integer("schedule.cooldown", cooldown, "an int number of validations >= 0", low=0)
        self.lr0 = base_lr(optimizer)
        self.min_lr = target_lr("schedule.min_lr", min_lr, self.lr0)
        self.warmup_steps = integer("schedule.warmup", warmup_steps, "an int number of optimizer steps >= 0", low=0)
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
