"""What a finished job means for its trial: Optuna state, values and user attributes, from the job's RunResult.

The rules (README, "Trials and their outcome"): ``completed`` -> COMPLETE with the objective(s); ``pruned``
-> PRUNED however the job ended; ``diverged`` -> FAIL, or COMPLETE with the worst value when
``diverged: worst``; ``failed``/``interrupted`` or an exception -> FAIL. A job that wrote no ``results.json``
is judged by its return value, as with hydra-optuna-sweeper. Telling Optuna is the sweep loop's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from lightopt.contract import RunResult
from lightopt.formatting import error_text
from lightopt.objective import worst_value as worst_for

# results.json status -> trial state; `diverged` depends on the `diverged` key
_STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
           "interrupted": TrialState.FAIL}
FINISHED_STATUSES = ("completed", "pruned", "diverged")  # a run with one of these ran to its end


@dataclass
class Outcome:
    """What a finished job means for its trial."""

    state: TrialState
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def judge(ret: JobReturn | None, run_dir: str | None, directions: Sequence[str], objectives: Sequence[str] | None,
          diverged: str = "fail", worst_value: float | None = None) -> Outcome:
    """The trial state, values and user attributes for a finished job (``ret`` None: it never returned)."""
    if ret is not None and ret.hydra_cfg is not None:
        run_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
    result = RunResult.read(run_dir)
    failed = ret is not None and ret.status == JobStatus.FAILED
    exception = ret._return_value if failed else None
    attrs: dict[str, Any] = {"run_dir": run_dir}
    if result is not None:
        attrs.update(status=result.status, global_step=result.global_step, wall_seconds=result.wall_seconds,
                     epochs=result.epochs)
        if result.cv:
            attrs["cv_std"] = result.cv.get("std")
        if result.error:
            attrs["error"] = str(result.error)[:2000]
    if exception is not None:
        attrs["error"] = error_text(exception)[:2000]
        attrs.setdefault("status", "failed")
    if isinstance(exception, optuna.TrialPruned) or (result is not None and result.status == "pruned"):
        return Outcome(TrialState.PRUNED, None, attrs)
    if exception is not None:
        return Outcome(TrialState.FAIL, None, attrs, attrs["error"])
    if result is None:
        if objectives:
            return Outcome(TrialState.FAIL, None, attrs, f"no results.json in {run_dir}")
        return _from_return_value(ret, directions, attrs)

    if result.status == "diverged":
        if diverged != "worst":
            return Outcome(TrialState.FAIL, None, attrs, "diverged")
        worst = [worst_value if worst_value is not None else worst_for(d) for d in directions]
        return Outcome(TrialState.COMPLETE, worst, attrs)
    if _STATES.get(result.status) != TrialState.COMPLETE:
        return Outcome(TrialState.FAIL, None, attrs, attrs.get("error") or f"status {result.status!r}")
    try:
        values = [result.value_of(n) for n in objectives] if objectives else [float(result.value)]
    except (KeyError, TypeError, ValueError) as err:
        return Outcome(TrialState.FAIL, None, attrs, f"{err}")
    if any(math.isnan(v) for v in values):
        return Outcome(TrialState.FAIL, None, attrs, "the objective is NaN")
    return Outcome(TrialState.COMPLETE, values, attrs)


def _from_return_value(ret: JobReturn | None, directions: Sequence[str], attrs: dict[str, Any]) -> Outcome:
    """A job that wrote no results.json: its return value is the objective (hydra-optuna-sweeper's way)."""
    value = None if ret is None else ret._return_value
    try:
        values = [float(v) for v in value] if len(directions) > 1 else [float(value)]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return Outcome(TrialState.FAIL, None, attrs, f"no results.json and a return value that is not a number: "
                                                     f"{value!r}"[:500])
    if len(values) != len(directions) or any(math.isnan(v) for v in values):
        return Outcome(TrialState.FAIL, None, attrs, f"return value {value!r} for {len(directions)} objectives")
    return Outcome(TrialState.COMPLETE, values, attrs)
