"""Learning-rate schedules: pure formulas, their parameters, the schedulers that apply them, and building
both from a ``schedule`` config section.

* :mod:`~lightopt.core.schedules.formulas`: ``(s, horizon, lr0, **params) -> lr``, :data:`SCHEDULES`,
  :func:`lr_at` (the conventions: ``t``, ``T``, warmup ``W``, ``s``, ``Tm``);
* :mod:`~lightopt.core.schedules.params`: step counts (:func:`to_steps`) and each schedule's checks;
* :mod:`~lightopt.core.schedules.schedulers`: :class:`ScheduledLR`, :class:`PlateauLR`;
* :mod:`~lightopt.core.schedules.factory`: :func:`create_scheduler`, :func:`build_lr_fn`.

This module only re-exports the public names; the modules above import each other directly. Building the
optimizer lives in :mod:`lightopt.core.optimizers`, the training horizon and the monitored metric in
:mod:`lightopt.core.plugin`.
"""

from lightopt.core.schedules.factory import build_lr_fn, create_scheduler
from lightopt.core.schedules.formulas import (
    SCHEDULES,
    constant,
    cosine,
    cosine_restarts,
    exponential,
    inverse_sqrt,
    linear,
    lr_at,
    multistep_decay,
    onecycle,
    polynomial,
    step_decay,
    wsd,
)
from lightopt.core.schedules.params import to_steps
from lightopt.core.schedules.schedulers import PlateauLR, ScheduledLR

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
