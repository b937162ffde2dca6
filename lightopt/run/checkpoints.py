"""A run's checkpoints beyond what Lightning's ``ModelCheckpoint`` writes: ``last.ckpt`` at the exact final step,
and the check that every checkpoint the run reports is on disk. Which checkpoints a run keeps is configured in
:mod:`lightopt.run.training`."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from lightopt.formatting import error_text

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last"  # checkpoints/last.ckpt: the run's latest state, to resume from


def last_path(checkpoints: Path) -> Path:
    return checkpoints / f"{LAST_CHECKPOINT}.ckpt"


def save_last(trainer: L.Trainer, checkpoints: Path) -> None:
    """``last.ckpt`` at the trainer's current step (nothing to save before the first step)."""
    if trainer.global_step == 0:
        return
    path = last_path(checkpoints)
    if saved_step(path) == trainer.global_step:
        # Lightning's own checkpoint at the end of the last training epoch holds this step already, in a loop
        # state it resumes from exactly; one saved now, between epochs, would resume an epoch short
        return
    try:
        trainer.save_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - the run's outcome is still recorded; say what is missing
        log.warning("could not write %s: %s", path, error_text(err))


def saved_step(path: Path) -> int | None:
    """The ``global_step`` of the checkpoint at ``path``, None when there is none (or it does not load)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # noqa: BLE001 - a damaged file is replaced
        return None


def check_written(trainer: L.Trainer, checkpoints: Path) -> None:
    """Raise when a checkpoint the run reports is missing on disk (a full disk, a directory made read-only)."""
    if trainer.global_step == 0 or not trainer.is_global_zero:
        return
    expected = [last_path(checkpoints)]
    expected += [Path(c.best_model_path) for c in trainer.checkpoint_callbacks if c.best_model_path]
    missing = [str(path) for path in dict.fromkeys(expected) if not path.is_file()]
    if missing:
        raise OSError(f"checkpoint not written: {', '.join(missing)} (is {checkpoints} writable, with space left?)")
