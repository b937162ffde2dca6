"""The run's record of its validation metrics: :class:`RunTracker`, a Lightning callback.

It records every validation's ``val/`` metrics (final and best), and checks at the first validation (the
sanity check when there is one, so before any training step) that the metrics the config depends on (the
objective, a plateau monitor) are really logged. The result file itself is :class:`lightopt.contract.RunResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightopt.errors import ConfigError
from lightopt.objective import better, check_direction, metric_direction


@dataclass
class MetricRecord:
    final: float
    best: float
    best_step: int
    direction: str

    def update(self, value: float, step: int) -> None:
        self.final = value
        if better(value, self.best, self.direction):
            self.best, self.best_step = value, step


def step_of_validation(trainer: L.Trainer) -> int:
    """The step a validation belongs to: the 0-based index of the last optimizer step taken, the step
    Lightning's loggers (metrics.csv) give it; ``trainer.global_step`` counts the steps (one more)."""
    return max(trainer.global_step - 1, 0)


@dataclass(eq=False)  # callbacks must stay hashable
class RunTracker(Callback):
    """Track val metrics over a run and detect misnamed or non-finite monitored metrics.

    Args:
        objective: name of the metric the run is judged by, e.g. ``"val/acc"``.
        direction: ``"minimize"`` or ``"maximize"``.
        required: other metrics the config relies on, as ``{config key: metric name}``.
        prefix: metrics whose names start with it are recorded.
    """

    objective: str
    direction: str
    required: dict[str, str] = field(default_factory=dict)
    prefix: str = "val/"
    metrics: dict[str, MetricRecord] = field(default_factory=dict)
    checked: bool = False
    nonfinite_objective: bool = False

    def __post_init__(self) -> None:
        check_direction(self.direction)

    def _check_logged(self, trainer: L.Trainer) -> None:
        logged = sorted(trainer.callback_metrics)
        wanted = {"objective.metric": self.objective, **self.required}
        for key, name in wanted.items():
            if name not in trainer.callback_metrics:
                raise ConfigError(
                    key, name, f"a metric the module logs: {', '.join(logged) or '(none logged)'}",
                    "the module never logs this metric",
                )
        self.checked = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.checked:
            self._check_logged(trainer)
        if trainer.sanity_checking:
            return
        step = step_of_validation(trainer)
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(self.prefix):
                continue
            v = float(value)
            direction = self.direction if name == self.objective else metric_direction(name)
            if name in self.metrics:
                self.metrics[name].update(v, step)
            else:
                self.metrics[name] = MetricRecord(v, v, step, direction)
        if not math.isfinite(self.metrics[self.objective].final):
            self.nonfinite_objective = True
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        # kept in checkpoints, so a resumed run reports best values over the whole run
        return {"metrics": {k: vars(r).copy() for k, r in self.metrics.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.metrics = {k: MetricRecord(**r) for k, r in state_dict.get("metrics", {}).items()}

    def objective_value(self, reduce: str = "best") -> float | None:
        rec = self.metrics.get(self.objective)
        if rec is None:
            return None
        return rec.best if reduce == "best" else rec.final

    def metrics_dict(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"final": r.final, "best": r.best, "best_step": r.best_step, "direction": r.direction}
            for name, r in sorted(self.metrics.items())
        }
