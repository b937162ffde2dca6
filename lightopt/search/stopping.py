"""When a sweep stops early: ``hydra.sweeper.timeout`` (no new trial after so many seconds) and
``hydra.sweeper.stop`` (no improvement of the best value by ``min_delta`` in ``patience`` completed trials).

Each rule is judged from the study alone, so that every sweep process on one study stops for the same reason.
What to do once a rule holds (start no new trial, let running ones finish) is the sweep loop's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from lightopt.checks import integer, number
from lightopt.errors import ConfigError
from lightopt.formatting import fmt


@dataclass(frozen=True)
class StopRules:
    """The checked ``timeout`` and ``stop`` settings of a sweep."""

    timeout: float | None = None  # seconds after the sweep's start
    patience: int | None = None  # completed trials without improvement
    min_delta: float = 0.0  # what counts as an improvement, in the objective's units
    started: float = 0.0  # time.monotonic() at the sweep's start

    @classmethod
    def of(cls, cfg: Mapping[str, Any], n_objectives: int) -> StopRules:
        timeout = cfg.get("timeout")
        if timeout is not None:
            timeout = number("hydra.sweeper.timeout", timeout, "seconds > 0, or null for no limit", low=0.0,
                             low_open=True)
        stop = cfg.get("stop")
        if stop is None:
            return cls(timeout=timeout, started=time.monotonic())
        if not isinstance(stop, Mapping) or not set(stop) <= {"patience", "min_delta"} or "patience" not in stop:
            raise ConfigError("hydra.sweeper.stop", stop, "{patience: completed trials, min_delta: units of the "
                              "objective}, or null")
        if n_objectives != 1:
            raise ConfigError("hydra.sweeper.stop", dict(stop), "null with several objectives",
                              "no single best value to watch")
        patience = integer("hydra.sweeper.stop.patience", stop["patience"], "an integer >= 1 (completed trials)",
                           low=1)
        min_delta = number("hydra.sweeper.stop.min_delta", stop.get("min_delta", 0.0),
                           "a number >= 0 (in the objective's units)", low=0.0)
        return cls(timeout=timeout, patience=patience, min_delta=min_delta, started=time.monotonic())

    def reason(self, trials: Sequence[FrozenTrial], maximize: bool) -> str | None:
        """Why no new trial should start, or None."""
        if self.timeout is not None and time.monotonic() - self.started >= self.timeout:
            return f"timeout: {fmt(self.timeout)} s since the sweep started (hydra.sweeper.timeout)"
        if self.patience is None:
            return None
        since = stale_trials(trials, maximize, self.min_delta)
        if since >= self.patience:
            return (f"no improvement of the best value by more than {fmt(self.min_delta)} in the last {since} "
                    f"completed trials (hydra.sweeper.stop.patience={self.patience})")
        return None


def stale_trials(trials: Sequence[FrozenTrial], maximize: bool, min_delta: float) -> int:
    """Completed trials (in the order they finished) since the best value last improved by more than
    ``min_delta``; the first completed trial is an improvement."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                  key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    best: float | None = None
    since = 0
    for t in done:
        value = t.value if maximize else -t.value
        if best is None or value > best + min_delta:
            best, since = value, 0
        else:
            since += 1
    return since
