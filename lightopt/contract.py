"""What a sweep and its jobs hand each other, one typed record each way, both in the job's run directory.

- :class:`TrialContext` (sweeper -> job): the sweeper writes it as ``trial.json`` before it launches the job;
  the job, and each DDP rank of it (they share the directory), reads it once with :meth:`TrialContext.current`.
- :class:`RunResult` (job -> sweeper): the job writes it as ``results.json``; the sweeper judges the trial by
  it, and the console and the sweep report show it.

How a sweep searches or a run trains lives elsewhere; this module only defines and stores the two records.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
RESULTS_FILE = "results.json"


def _write_json(path: Path, data: Mapping[str, Any], mode: int = 0o644) -> Path:
    """Through a temporary file, so that a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(dict(data), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _hydra_run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)  # unset: a composed config
    return Path(output_dir) if output_dir else None


@dataclass(frozen=True)
class TrialContext:
    """The Optuna trial a job runs, and what the job needs to take part in its sweep.

    Attributes:
        storage: the study's storage URL, its password hidden (the job takes it from ``lightopt.storage.PASSWORD_ENV``).
        study_name: the study.
        number: the trial's number in the study (also the job's ``hydra.job.num``).
        pruner: the sweep's pruner config (``_target_`` and arguments), or None for no pruning.
        searched: the config keys the sweep searched, by which trackers name the run.
        entry_point: the command that started the sweep, with which the job's DDP ranks are started.
        run_dir: the job's run directory, where the context and the job's results.json lie.
        threads: the CPU threads the job's torch may use (the machine's cores shared among the trials running at
            once), or None to leave torch's own choice.
    """

    storage: str
    study_name: str
    number: int
    pruner: dict[str, Any] | None = None
    searched: tuple[str, ...] = ()
    entry_point: tuple[str, ...] = ()
    run_dir: str | None = None
    threads: int | None = None

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return _write_json(path / TRIAL_FILE, asdict(self), mode=0o600)

    @classmethod
    def read(cls, run_dir: str | Path) -> TrialContext | None:
        """The context in ``run_dir``, or None when the directory holds none (the job is not a sweep trial)."""
        path = Path(run_dir) / TRIAL_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(str(data["storage"]), str(data["study_name"]), int(data["number"]), data.get("pruner"),
                   tuple(data.get("searched") or ()), tuple(data.get("entry_point") or ()), str(Path(run_dir)),
                   data.get("threads"))

    @classmethod
    def current(cls) -> TrialContext | None:
        """The context of the running Hydra job, or None outside a sweep (or outside Hydra)."""
        run_dir = _hydra_run_dir()
        return None if run_dir is None else cls.read(run_dir)


@dataclass
class RunResult:
    """The outcome of one run: what ``results.json`` holds (the README lists its fields).

    ``metrics`` maps each ``val/`` metric to ``{"final", "best", "best_step", "direction"}``.
    """

    objective: str
    value: float
    direction: str
    status: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    global_step: int | None = None
    epochs: int | None = None
    wall_seconds: float | None = None
    step_seconds: float | None = None  # of wall_seconds, in training and validation batches
    trial: int | None = None
    lr: float | None = None
    lr_find: dict[str, Any] | None = None
    best_checkpoint: str | None = None
    error: str | None = None
    cv: dict[str, Any] | None = None  # cv=kfold: {folds, values, mean, std, run_dirs}; value is the mean
    averaging: dict[str, Any] | None = None  # averaging=ema|swa: its settings, start_step, updates
    batch_size_find: dict[str, Any] | None = None  # tune=batch_size: found, configured, cap, mode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, run_dir: str | Path) -> Path:
        """Write ``results.json``; a number that is not finite (a diverged run's value) is written as ``null``,
        which every JSON reader takes (the status says why)."""
        return _write_json(Path(run_dir) / RESULTS_FILE, _finite_or_null(self.to_dict()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, run_dir: str | Path | None) -> RunResult | None:
        """The run's result, or None when it wrote none (a damaged file is logged and counts as none)."""
        if not run_dir:
            return None
        path = Path(run_dir) / RESULTS_FILE
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            log.warning("cannot read %s: %s", path, err)
            return None

    def value_of(self, name: str) -> float:
        """The value named ``name``: the objective's ``value``, a metric's best (``name:final`` for its last
        value), or a top-level number such as ``wall_seconds``."""
        metric, _, which = name.partition(":")
        if metric == self.objective and not which:
            return float(self.value)
        if metric in self.metrics:
            return float(self.metrics[metric][which or "best"])
        value = getattr(self, metric, None) if metric in {f.name for f in fields(self)} else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not which:
            return float(value)
        numbers = [f.name for f in fields(self) if isinstance(getattr(self, f.name), (int, float))
                   and not isinstance(getattr(self, f.name), bool)]
        raise KeyError(f"objective {name!r} is not in results.json; it has the objective {self.objective!r}, "
                       f"metrics {sorted(self.metrics)} and numbers {numbers}")
