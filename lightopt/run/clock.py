"""How long a run spent in its training and validation steps: :class:`StepClock`, a Lightning callback.

A run's cost besides its steps (imports, building data, model and trainer, checkpoints, loggers, a sweep's
bookkeeping) is its wall time minus this; ``results.json`` keeps both (``wall_seconds``, ``step_seconds``).
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback


class StepClock(Callback):
    """Seconds from each training batch's start to its end (forward, backward, optimizer step) and each
    validation batch's, sanity check included. CUDA work still queued when a batch ends is counted in a later
    one (the clock does not synchronize, which would slow the run), so the sum is right, not each batch."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def _start(self, *args: Any) -> None:
        self._started = time.perf_counter()

    def _stop(self, *args: Any) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    on_train_batch_start = on_validation_batch_start = _start
    on_train_batch_end = on_validation_batch_end = _stop
