"""Schedule-free optimizers (Defazio et al. 2024, the ``schedulefree`` package): when they need which mode.

A schedule-free optimizer keeps two points: it steps at ``y`` (train mode) and its averaged iterate ``x``
(eval mode) is the model to validate, checkpoint and keep. :class:`ScheduleFreeModes`, a Lightning callback,
switches the optimizer: train mode before each training batch, eval mode for validation, for the checkpoints
Lightning writes after a validation or an epoch, and at the end of training. :func:`lightopt.configure_optimizers`
adds it to the trainer when it builds such an optimizer, so that a user's own module is served as well.
Which optimizers exist lives in the ``optimizer`` configs; their lr is constant (their warmup is their own).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightopt.errors import ConfigError

log = logging.getLogger(__name__)

#: the schedules a schedule-free optimizer may run with: the lr they are given is constant by design
SCHEDULES = ("constant",)


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has the ``train()``/``eval()`` modes of the schedule-free optimizers."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None)) \
        and "train_mode" in optimizer.param_groups[0]


def check_schedule(optimizer: torch.optim.Optimizer, schedule: Mapping[str, Any] | None) -> None:
    """Refuse a schedule other than ``constant`` for a schedule-free optimizer (one would fight its averaging)."""
    name = None if schedule is None else schedule.get("name")
    if name is not None and name not in SCHEDULES:
        raise ConfigError("schedule", name, "schedule=constant with a schedule-free optimizer (its warmup is "
                          "optimizer.warmup_steps)", f"{type(optimizer).__name__} needs no learning-rate schedule: "
                          "its averaged iterate replaces the decay")


class ScheduleFreeModes(Callback):
    """Train mode for training steps, eval mode for validation, checkpoints and the end of training.

    Lightning runs checkpoint callbacks after the others, so the checkpoints written at the end of a validation or
    an epoch see eval mode (the averaged weights ``x``); a resumed run loads them and the next training batch
    switches back, as the uninterrupted run did.
    """

    @staticmethod
    def _optimizers(trainer: L.Trainer) -> list[Any]:
        return [opt for opt in trainer.optimizers if is_schedule_free(opt)]

    def _set(self, trainer: L.Trainer, mode: str) -> None:
        for opt in self._optimizers(trainer):
            getattr(opt, mode)()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._set(trainer, "train")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, "eval")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, "eval")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, "eval")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._set(trainer, "eval")  # an interrupted run's last.ckpt holds the averaged weights too


def serve(trainer: L.Trainer | None, optimizer: torch.optim.Optimizer) -> None:
    """Make sure ``trainer`` switches ``optimizer``'s modes: add :class:`ScheduleFreeModes` unless it has one."""
    if trainer is None:
        raise ConfigError("optimizer", type(optimizer).__name__, "a module attached to a Trainer",
                          "a schedule-free optimizer needs the trainer to switch its train/eval modes")
    if not any(isinstance(cb, ScheduleFreeModes) for cb in trainer.callbacks):
        trainer.callbacks.append(ScheduleFreeModes())
        log.debug("added ScheduleFreeModes to the trainer's callbacks for %s", type(optimizer).__name__)
    optimizer.train()  # the first step needs train mode; the callback's first call may come after the sanity check
