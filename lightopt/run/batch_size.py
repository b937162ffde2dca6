"""Finding the batch size before training (``tune=batch_size``), through Lightning's batch-size finder.

The finder trains a few steps at growing batch sizes (``power``: doubling; ``binsearch``: doubling, then a binary
search below the first failure) until one runs out of memory, ``max_trials`` sizes were tried, or the size
reaches its cap (``max_val``, and the training split of one device); the weights and state are restored
afterwards. It needs a data module (or model) with a settable ``batch_size``. The lr finder
(:mod:`lightopt.run.tune`) runs after it, at the size found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L

from lightopt.checks import integer, one_of
from lightopt.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("power", "binsearch")
KEYS = ("mode", "init_val", "max_trials", "steps_per_trial", "max_val")


@dataclass(frozen=True)
class BatchSizeSettings:
    """The ``tune.batch_size`` section, checked."""

    mode: str = "power"
    init_val: int = 2
    max_trials: int = 25
    steps_per_trial: int = 3
    max_val: int = 8192


@dataclass(frozen=True)
class BatchSizeResult:
    """What the finder found; :meth:`as_dict` is the ``batch_size_find`` entry of ``results.json``."""

    found: int
    configured: int | None  # data.batch_size before the finder
    cap: int  # the largest size it could reach: max_val, or the training split of one device if smaller
    mode: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_batch_size_finder(cfg: Mapping[str, Any]) -> BatchSizeSettings | None:
    """The checked settings of ``tune=batch_size`` (the ``tune.batch_size`` section), None without it."""
    section = (cfg.get("tune") or {}).get("batch_size")
    if section is None:
        return None
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ConfigError(f"tune.batch_size.{unknown[0]}", section[unknown[0]],
                          f"keys of tune=batch_size: {', '.join(KEYS)}", "unknown key")
    d = BatchSizeSettings()
    settings = BatchSizeSettings(
        mode=one_of("tune.batch_size.mode", section.get("mode", d.mode), MODES),
        init_val=integer("tune.batch_size.init_val", section.get("init_val", d.init_val),
                         "an integer >= 1 (the first size tried)", low=1),
        max_trials=integer("tune.batch_size.max_trials", section.get("max_trials", d.max_trials),
                           "an integer >= 1 (sizes tried at most)", low=1),
        steps_per_trial=integer("tune.batch_size.steps_per_trial", section.get("steps_per_trial", d.steps_per_trial),
                                "an integer >= 1 (training steps at each size)", low=1),
        max_val=integer("tune.batch_size.max_val", section.get("max_val", d.max_val),
                        "an integer >= 1 (the largest size tried)", low=1),
    )
    if settings.init_val > settings.max_val:
        raise ConfigError("tune.batch_size.init_val", settings.init_val,
                          f"at most tune.batch_size.max_val={settings.max_val}")
    if cfg.get("ckpt_path"):
        raise ConfigError("tune.batch_size", "batch_size", "no tune when resuming from ckpt_path",
                          "a resumed run continues its checkpoint's batch size and schedule")
    return settings


def _cap(trainer: L.Trainer, datamodule: Any, settings: BatchSizeSettings) -> int:
    """``max_val``, lowered to the training samples of one device when the data module says how many it has."""
    samples = getattr(datamodule, "num_train", None)
    if isinstance(samples, int) and samples > 0:
        return max(1, min(settings.max_val, samples // trainer.world_size))
    return settings.max_val


def find_batch_size(trainer: L.Trainer, module: L.LightningModule, datamodule: Any,
                    settings: BatchSizeSettings) -> BatchSizeResult:
    """Run Lightning's finder; the found size is left in ``datamodule.batch_size`` (or the module's)."""
    from lightning.pytorch.tuner import Tuner

    holder = datamodule if hasattr(datamodule, "batch_size") else module
    if not isinstance(getattr(holder, "batch_size", None), int):
        raise ConfigError("tune", "batch_size", "a data module or model with an integer batch_size attribute",
                          f"{type(datamodule).__name__} has no batch_size to set")
    configured, cap = holder.batch_size, _cap(trainer, datamodule, settings)
    init = min(settings.init_val, cap)
    # Lightning's doubling passes no cap on to the size it sets next, and returns that untried size once it
    # exceeds max_val: so it is given no more trials than doublings that stay within the cap
    trials = min(settings.max_trials, int(math.log2(cap / init)) + 1)
    found = Tuner(trainer).scale_batch_size(
        module, datamodule=datamodule, mode=settings.mode, steps_per_trial=settings.steps_per_trial,
        init_val=init, max_trials=trials, max_val=cap)
    if found is None:  # Lightning skips it under fast_dev_run
        raise ConfigError("tune", "batch_size", "no tune=batch_size with trainer.fast_dev_run",
                          "Lightning skips the batch-size finder in a fast_dev_run")
    holder.batch_size = int(found)
    result = BatchSizeResult(int(found), configured, cap, settings.mode)
    if trainer.is_global_zero:
        log.info("tune=batch_size: batch size %d (was %s; largest tried at most %d, %s mode)", result.found,
                 configured, cap, settings.mode)
    return result
