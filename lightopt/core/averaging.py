"""Weight averaging (``averaging=ema|swa``): a running average of the weights that validation, the objective,
checkpoints and the final model use, as a Lightning callback built on Lightning's ``WeightAveraging``.

- EMA: after every ``update_every`` optimizer steps from ``start`` on, ``w_avg <- d_n * w_avg + (1 - d_n) * w``
  with ``d_n = decay``, or with ``warmup`` ``d_n = min(decay, (1 + n) / (10 + n))`` after n updates (the
  average follows the weights closely at first). ``decay = 0`` is no averaging.
- SWA (Izmailov et al. 2018): the equal-weight average of the weights at every ``update_every`` steps from
  ``start`` on, ``w_avg = (1/N) * sum w_i``; with ``lr`` set, training runs at that constant lr from ``start``
  (each param group at its multiple of it), SWA's own lr.

Until the first update the model is validated and saved as it is (the average does not exist yet). A
checkpoint holds the average as its ``state_dict`` and the trained weights as ``current_model_state``, so a
resumed run continues both exactly. :func:`weight_averaging` builds the callback from the ``averaging``
section, for lightopt's run and for a user's own Trainer alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

from lightopt.checks import integer, is_real, number, one_of
from lightopt.errors import ConfigError

NAMES = ("none", "ema", "swa")
KEYS = {"ema": ("name", "decay", "update_every", "warmup", "start"), "swa": ("name", "update_every", "start", "lr")}


@dataclass(frozen=True)
class AveragingSettings:
    """The ``averaging`` section, checked."""

    name: str  # ema | swa
    start: int | float = 0  # first optimizer step (int), or share of the run (float in [0, 1))
    update_every: int = 1
    decay: float = 0.999  # ema
    warmup: bool = True  # ema
    lr: float | None = None  # swa


def check_averaging(section: Mapping[str, Any] | None) -> AveragingSettings | None:
    """The checked ``averaging`` settings, or None for no averaging (``none`` or no section)."""
    if section is None:
        return None
    name = one_of("averaging.name", section.get("name", "none"), NAMES)
    if name == "none":
        return None
    unknown = sorted(set(section) - set(KEYS[name]))
    if unknown:
        raise ConfigError(f"averaging.{unknown[0]}", section[unknown[0]], f"keys of averaging={name}: "
                          f"{', '.join(KEYS[name])}", "unknown key")
    start = section.get("start", 0)
    if isinstance(start, float):
        start = number("averaging.start", start, "an optimizer step (integer >= 0) or a share of the run in [0, 1)",
                       low=0.0, high=1.0, high_open=True)
    else:
        start = integer("averaging.start", start, "an optimizer step (integer >= 0) or a share of the run in [0, 1)",
                        low=0)
    every = integer("averaging.update_every", section.get("update_every", 1), "an integer >= 1 (optimizer steps "
                    "between updates of the average)", low=1)
    if name == "ema":
        decay = number("averaging.decay", section.get("decay", 0.999), "a number in [0, 1) (0 = no averaging)",
                       low=0.0, high=1.0, high_open=True)
        warmup = one_of("averaging.warmup", section.get("warmup", True), (True, False))
        return AveragingSettings(name, start, every, decay=decay, warmup=warmup)
    lr = section.get("lr")
    if lr is not None:
        lr = number("averaging.lr", lr, "a learning rate > 0 from averaging.start on, or null (the schedule's)",
                    low=0.0, low_open=True)
    return AveragingSettings(name, start, every, lr=lr)


class Averaging(WeightAveraging):
    """The EMA or SWA of :mod:`lightopt.core.averaging`, as a Lightning callback (add it to the Trainer)."""

    def __init__(self, settings: AveragingSettings) -> None:
        fn = {"multi_avg_fn": self._ema} if settings.name == "ema" else {}  # SWA: AveragedModel's equal average
        super().__init__(use_buffers=True, **fn)
        self.settings = settings
        self.updates = 0  # updates of the average so far
        self.start_step = settings.start if isinstance(settings.start, int) else None

    def __repr__(self) -> str:
        return f"Averaging({self.settings})"

    def decay_now(self) -> float:
        """The EMA decay of the next update (after :attr:`updates` updates)."""
        s, n = self.settings, self.updates
        return min(s.decay, (1 + n) / (10 + n)) if s.warmup else s.decay

    def _ema(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: Any) -> None:
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay_now())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.start_step is None and stage == "fit":
            total = trainer.estimated_stepping_batches
            if not is_real(total) or total == float("inf"):
                raise ConfigError("averaging.start", self.settings.start, "an optimizer step (integer) for a run "
                                  "without a step or epoch limit", "a share of the run needs its length")
            self.start_step = int(self.settings.start * total)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or self.start_step is None or step_idx < self.start_step:
            return False
        return (step_idx - self.start_step) % self.settings.update_every == 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        lr = self.settings.lr
        if lr is not None and self.start_step is not None and trainer.global_step >= self.start_step:
            for opt in trainer.optimizers:  # SWA's constant lr, each group at its multiple of lr0
                base = opt.defaults["lr"]
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("initial_lr", base) / base

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        before = self._latest_update_step
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._latest_update_step != before:
            self.updates += 1

    # until the first update there is no average: validate, save and keep the model as it is
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.updates:
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.updates:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if "current_model_state" in checkpoint:  # else saved before the first update: nothing averaged yet
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates, "start_step": self.start_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.updates = int(state_dict.get("updates", 0))
        self.start_step = state_dict.get("start_step", self.start_step)

    def summary(self) -> dict[str, Any]:
        """What ``results.json`` says of the averaging: the settings, the first step and the updates made."""
        settings = {k: v for k, v in asdict(self.settings).items() if k in KEYS[self.settings.name]}
        return {**settings, "start_step": self.start_step, "updates": self.updates}


def weight_averaging(cfg: Any) -> Averaging | None:
    """The callback for ``cfg``'s ``averaging`` section (or that section itself), None for ``none``."""
    if cfg is None or "averaging" in cfg:
        section = None if cfg is None else cfg.get("averaging")
    else:  # the section itself, or a config without one
        section = cfg if set(cfg) <= {key for keys in KEYS.values() for key in keys} else None
    settings = check_averaging(section)
    return None if settings is None else Averaging(settings)
