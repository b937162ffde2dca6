"""Hyperparameter search with Optuna (>= 4) as a Hydra sweeper: ``python train.py -m hydra/sweeper=lightopt ...``.

This module holds the whole sweeper: reading its config, the study and its storage, reserving trials,
launching them through Hydra's launcher, judging each run from its ``results.json``, and the sweep's output
files. (A job re-attaches to its own trial with :func:`lightopt.pruning.attach_trial`.) The Hydra plugin
(``hydra_plugins/lightopt_sweeper``) only registers the configs and hands over to :class:`OptunaSweeper`.
The search-space syntax, conditional parameters included, is described in :mod:`lightopt.search_space`.

Usage::

    python train.py -m hydra/sweeper/sampler=tpe hydra.sweeper.n_trials=30 \\
        'optimizer.lr=tag(log,interval(1e-4,1e-1))' 'optimizer=choice(sgd,adam)' trainer.max_epochs=5

Every key of ``hydra.sweeper`` is listed, with its default, in
``hydra_plugins/lightopt_sweeper/conf/hydra/sweeper/lightopt.yaml``; samplers and pruners are the config
groups ``hydra/sweeper/sampler`` (grid random tpe gp cmaes qmc nsgaii) and ``hydra/sweeper/pruner`` (none
median percentile successive_halving hyperband patient threshold); any other Optuna sampler or pruner is
given by ``_target_``. hydra-optuna-sweeper configs work unchanged but for the sweeper's name.

Trials and their outcome
    The sweeper asks Optuna for ``n_jobs`` trials, launches them as one batch (``hydra.job.num``, hence the
    run subdirectory, is the Optuna trial number, so a resumed sweep never reuses a directory), and tells
    Optuna the result of each. Each job gets, besides its searched and fixed overrides,
    ``hydra.sweeper.storage=<url> hydra.sweeper.study_name=<name> hydra.sweeper.trial=<number>``, from
    which it re-attaches to its trial (:func:`lightopt.pruning.attach_trial`) to report intermediate values
    and be pruned, and ``hydra.sweeper.searched=[<keys>]``, by which trackers name its run.
    The job's ``results.json`` (in its run directory) decides the trial's state: ``status: completed`` ->
    COMPLETE with the objective(s); ``pruned`` -> PRUNED; ``diverged`` -> FAIL, or COMPLETE with
    ``worst_value`` when ``diverged: worst``; ``failed``/``interrupted``, an exception in the job (out of
    memory included), or no results.json and no numeric return value -> FAIL. ``global_step``,
    ``wall_seconds``, ``status``, ``run_dir`` and ``error`` are stored as trial user attributes.
    Several objectives: ``direction: [maximize, minimize]`` with ``objectives: [val/acc, wall_seconds]``.

Failures
    A failed trial is recorded and the sweep goes on; once ``failure_rate_min_trials`` trials finished and
    more than ``max_failure_rate`` of them failed, the sweep stops with exit code 1 and the last error.
    Ctrl-C stops the sweep: finished trials stay, running ones are told FAIL, the outputs are written, and
    the exit code is 130.

Storage, resume, several processes
    The study lives in ``sqlite:///<hydra.sweep.dir>/optuna.db`` unless ``storage`` says otherwise; its name
    is ``<task>-<hash of search space, fixed overrides and directions>`` unless ``study_name`` is set. Running
    the same command again with the same ``hydra.sweep.dir`` (or the same explicit storage) resumes: every
    trial already in the study, FAIL and PRUNED included, counts toward ``n_trials`` and only the rest run.
    A trial left RUNNING by a sweep that died (SIGKILL, lost machine) is marked FAIL: at once for a SQLite
    storage when no other sweep process holds its lock file (``<db>.lock``), otherwise once its heartbeat
    (``heartbeat_interval``) has been silent for ``grace_period`` seconds.
    Trials are reserved under a lock held across processes: a file lock for SQLite, a transaction-scoped
    PostgreSQL advisory lock (``pg_advisory_xact_lock``) for ``postgresql://`` storages. Under it a process
    counts the study's trials and creates only as many as ``n_trials`` leaves, so any number of sweep
    processes (on several machines: same command, same ``storage`` and ``study_name``) together run exactly
    ``n_trials``. Other databases get no lock: concurrent processes may then overshoot ``n_trials``. A
    resumed sweep or a later worker seeds its sampler with ``seed`` + the number of trials already in the
    study, so that it does not replay the suggestions of the first.

Parallel trials, GPUs, clusters
    ``n_jobs`` trials run at a time with a parallel launcher: ``hydra/launcher=joblib`` (processes on this
    machine), or ``hydra/launcher=submitit_slurm`` (pip install hydra-submitit-launcher; each trial a SLURM
    job, e.g. ``hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=120``;
    the sweeper waits for each batch and needs a storage the nodes can reach: a shared file system for SQLite,
    better PostgreSQL). With ``gpu_per_trial: true`` and several CUDA devices, the k-th trial of a batch gets
    ``trainer.devices=[k mod #devices]``, so parallel single-device trials do not share a GPU.

Outputs in ``hydra.sweep.dir``
    ``optimization_results.yaml`` (``name: optuna``, ``best_params``, ``best_value``, or ``solutions``, the
    Pareto front, for several objectives, with ``study_name`` and ``storage``), ``trials.csv`` (``number``,
    ``state``, ``value`` or ``value_<objective>``, one column per parameter, ``steps``, ``seconds``,
    ``status``, ``run_dir``), both rewritten after every trial; at the end (stopped sweeps included, unless
    ``report: false``) ``report.html`` and its pictures (:mod:`lightopt.report`), and a W&B ``sweep-summary``
    run when the trials logged to W&B; ``multirun.yaml``; the study database (``optuna-dashboard
    sqlite:///<sweep dir>/optuna.db``); one run directory per trial. A sweep directory holds one study: a
    different search (other space, fixed overrides or directions) in it is refused, as its trial numbers,
    hence run directories, would collide.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gc
import hashlib
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra._internal.utils import _locate
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from optuna.trial import FrozenTrial, TrialState

from lightopt.errors import ConfigError
from lightopt.search_space import SearchSpace, build_search_space, quote, value_text

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
DEFAULT_N_TRIALS = 20
EXIT_SWEEP_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
# results.json status -> trial state; `diverged` depends on the `diverged` key
_STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
           "interrupted": TrialState.FAIL}


class SweepStopped(Exception):
    """The sweep ended before n_trials: too many failures, or an interruption (carries the exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------------------------------------ storage


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (None for other URLs or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def with_driver(url: str) -> str:
    """The storage URL as the sweep and its jobs use it.

    A relative SQLite path becomes absolute (a job may run elsewhere); a bare ``postgresql://`` names the
    PostgreSQL driver that is installed (``postgresql+psycopg2://``): SQLAlchemy's default changed from
    psycopg2 (2.0) to psycopg 3 (2.1).
    """
    import importlib.util

    path = sqlite_path(url)
    if path is not None and not path.is_absolute():
        query = url.partition("?")[1] + url.partition("?")[2]
        return f"sqlite:///{path.absolute()}{query}"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return url


def open_storage(url: str, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``; the sweeper passes heartbeat settings, a job does not need them."""
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the sweep, its heartbeat and its jobs all write to one file: wait for its lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs["pool_pre_ping"] = True  # survive a database restart during a long sweep
    try:
        with warnings.catch_warnings(), _schema_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except Exception as err:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        raise ConfigError("hydra.sweeper.storage", _hide_password(url),
                          "a database URL: sqlite:///path/to/file.db, postgresql://user:password@host/db, ...",
                          f"cannot open it ({type(err).__name__}: {err})".splitlines()[0]) from None


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, one process at a time opens the storage.

    Opening creates Optuna's tables when they are missing; sweep workers started together on a fresh
    database would otherwise collide in ``CREATE TABLE`` and all but one fail. A session-level advisory
    lock, released when the connection closes (or its process dies), serializes that step.
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


# a fixed 64-bit key for _schema_lock; study locks are keyed by a hash of the study name
_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"lightopt-schema", digest_size=8).digest(), "big", signed=True)


class StudyLock:
    """Serializes trial reservation among the sweep processes of one study (this base class: no lock).

    ``alone`` is True when this process can tell that no other sweep process uses the storage, so that
    trials left RUNNING there belong to a dead sweep.
    """

    alone = False

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass

    @staticmethod
    def for_storage(url: str, storage: optuna.storages.RDBStorage, study_name: str) -> StudyLock:
        path = sqlite_path(url)
        if path is not None:
            return FileLock(path.with_name(path.name + ".lock"))
        if url.startswith("postgresql"):
            return PostgresLock(storage, study_name)
        log.warning("storage %s: trials are reserved without a lock; several sweep processes sharing this "
                    "study may together run more than n_trials (PostgreSQL and SQLite storages are locked)",
                    _hide_password(url))
        return StudyLock()


class FileLock(StudyLock):
    """POSIX record locks on one file: byte 0 shared by every live sweep process, byte 1 held to reserve."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            self.alone = True
        except OSError:
            self.alone = False
        fcntl.lockf(self.fd, fcntl.LOCK_SH, 1, 0)  # atomic downgrade; waits only for a starting process

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 1)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 1)

    def close(self) -> None:
        os.close(self.fd)  # releases both locks


class PostgresLock(StudyLock):
    """A transaction-scoped advisory lock keyed by the study name: released at commit, or if the process dies."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self.engine = storage.engine
        digest = hashlib.blake2b(f"lightopt-sweep:{study_name}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big", signed=True)

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        import sqlalchemy

        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.key})
            yield


class Heartbeat:
    """Records a heartbeat for each running trial of this process every ``interval`` seconds."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Sequence[int], interval: float) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lightopt-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # noqa: BLE001 - a missed beat is retried next interval
                    log.debug("heartbeat of trial id %s failed: %s", trial_id, err)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def _hide_password(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}:***@{tail}" if ":" in creds else url


# ------------------------------------------------------------------------------------------------ outcomes


@dataclass
class Outcome:
    """What a finished job means for its trial."""

    state: TrialState
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def read_results(run_dir: str | Path | None) -> dict[str, Any] | None:
    """A run's ``results.json``, or None when there is none (or it cannot be read)."""
    if not run_dir:
        return None
    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", path, err)
        return None


def objective_value(results: Mapping[str, Any], name: str) -> float:
    """The value named ``name`` in a results.json: the objective's ``value``, a metric's best (or
    ``name:final``), or a top-level number such as ``wall_seconds``."""
    metric, _, which = name.partition(":")
    metrics = results.get("metrics") or {}
    if metric == results.get("objective") and not which:
        return float(results["value"])
    if metric in metrics:
        return float(metrics[metric][which or "best"])
    value = results.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not which:
        return float(value)
    numbers = [k for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    raise KeyError(f"objective {name!r} is not in results.json; it has the objective {results.get('objective')!r}, "
                   f"metrics {sorted(metrics)} and numbers {numbers}")


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip()


def judge(ret: JobReturn | None, run_dir: str | None, directions: Sequence[str], objectives: Sequence[str] | None,
          diverged: str = "fail", worst_value: float | None = None) -> Outcome:
    """The trial state, values and user attributes for a finished job (see the module docstring)."""
    if ret is not None and ret.hydra_cfg is not None:
        run_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
    results = read_results(run_dir)
    failed = ret is not None and ret.status == JobStatus.FAILED
    exception = ret._return_value if failed else None
    attrs: dict[str, Any] = {"run_dir": run_dir}
    if results:
        attrs.update({k: results.get(k) for k in ("status", "global_step", "wall_seconds", "epochs")})
        if results.get("error"):
            attrs["error"] = str(results["error"])[:2000]
    if exception is not None:
        attrs["error"] = _error_text(exception)[:2000]
        attrs.setdefault("status", "failed")
    if isinstance(exception, optuna.TrialPruned) or (results and results.get("status") == "pruned"):
        return Outcome(TrialState.PRUNED, None, attrs)
    if exception is not None:
        return Outcome(TrialState.FAIL, None, attrs, attrs["error"])
    if results is None:
        if objectives:
            return Outcome(TrialState.FAIL, None, attrs, f"no results.json in {run_dir}")
        return _from_return_value(ret, directions, attrs)

    status = results.get("status")
    if status == "diverged":
        if diverged != "worst":
            return Outcome(TrialState.FAIL, None, attrs, "diverged")
        worst = [worst_value if worst_value is not None else (-math.inf if d == "maximize" else math.inf)
                 for d in directions]
        return Outcome(TrialState.COMPLETE, worst, attrs)
    if _STATES.get(status) != TrialState.COMPLETE:
        return Outcome(TrialState.FAIL, None, attrs, attrs.get("error") or f"status {status!r}")
    try:
        names = list(objectives) if objectives else [results.get("objective")]
        values = ([objective_value(results, n) for n in names] if objectives else [float(results["value"])])
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


# ------------------------------------------------------------------------------------------------ outputs


def _value_columns(directions: Sequence[str], objectives: Sequence[str] | None) -> list[str]:
    if len(directions) == 1:
        return ["value"]
    names = list(objectives) if objectives else [str(i) for i in range(len(directions))]
    return [f"value_{n}" for n in names]


def param_columns(trials: Sequence[FrozenTrial], space: SearchSpace) -> list[str]:
    names = space.names
    for t in trials:
        names += [n for n in t.params if n not in names]
    return names


def write_trials_csv(path: Path, trials: Sequence[FrozenTrial], space: SearchSpace, directions: Sequence[str],
                     objectives: Sequence[str] | None) -> None:
    """One row per trial (rewritten whole, through a temporary file so a reader never sees half of it)."""
    values, params = _value_columns(directions, objectives), param_columns(trials, space)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", *values, *params, "steps", "seconds", "status", "run_dir"])
        for t in trials:
            row_values = list(t.values) if t.values else [None] * len(values)
            seconds = t.user_attrs.get("wall_seconds")
            if seconds is None and t.datetime_start and t.datetime_complete:
                seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
            writer.writerow([t.number, t.state.name, *["" if v is None else v for v in row_values],
                             *[t.params.get(p, "") for p in params],
                             _blank(t.user_attrs.get("global_step")), _blank(seconds),
                             _blank(t.user_attrs.get("status")), _blank(t.user_attrs.get("run_dir"))])
    tmp.replace(path)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def write_optimization_results(path: Path, study: optuna.Study, trials: Sequence[FrozenTrial],
                               storage_url: str) -> None:
    """Best parameters and value (one objective) or the Pareto front (several), as hydra-optuna-sweeper."""
    out: dict[str, Any] = {"name": "optuna"}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(study.directions) == 1:
        best = study.best_trial if complete else None
        out["best_params"] = dict(best.params) if best else None
        out["best_value"] = best.value if best else None
        out["best_trial"] = best.number if best else None
        out["best_run_dir"] = best.user_attrs.get("run_dir") if best else None
    else:
        out["solutions"] = [{"number": t.number, "params": dict(t.params), "values": list(t.values),
                             "run_dir": t.user_attrs.get("run_dir")} for t in (study.best_trials if complete else [])]
    out["directions"] = [d.name.lower() for d in study.directions]
    out["study_name"] = study.study_name
    out["storage"] = _hide_password(storage_url)
    out["trials"] = _counts(trials)
    tmp = path.with_suffix(".yaml.tmp")
    OmegaConf.save(OmegaConf.create(out), tmp)
    tmp.replace(path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def print_summary(study: optuna.Study, trials: Sequence[FrozenTrial], space: SearchSpace,
                  objectives: Sequence[str] | None = None, top: int = 5) -> None:
    """A short table of the best trials, or of the Pareto front for several objectives."""
    from rich.console import Console
    from rich.table import Table

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.info("no trial completed")
        return
    if len(study.directions) == 1:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        shown = sorted(complete, key=lambda t: t.value, reverse=reverse)[:top]  # type: ignore[arg-type,return-value]
        title = f"best {len(shown)} of {len(trials)} trials ({study.direction.name.lower()})"
    else:
        shown = sorted(study.best_trials, key=lambda t: t.number)
        title = f"Pareto front: {len(shown)} of {len(trials)} trials"
    params = param_columns(shown, space)
    table = Table(title=title)
    for name in ["#", *[c.replace("_", " ", 1) for c in _value_columns(study.directions, objectives)], *params,
                 "steps", "seconds"]:
        table.add_column(name, overflow="fold")
    for t in shown:
        table.add_row(str(t.number), *[_fmt(v) for v in t.values], *[str(t.params.get(p, "")) for p in params],
                      str(t.user_attrs.get("global_step", "")), str(t.user_attrs.get("wall_seconds", "")))
    Console(width=max(100, min(200, 20 * (len(params) + 4)))).print(table)


# ------------------------------------------------------------------------------------------------ sweeper


@dataclass
class Pending:
    """A reserved trial: the Optuna trial, its job overrides and where its run will write."""

    trial: optuna.Trial
    overrides: list[str]
    run_dir: str | None = None
    told: bool = False
    shape: tuple[str, ...] = ()  # the overrides with numeric values left out: what composition depends on


class OptunaSweeper(Sweeper):
    """The sweeper behind ``hydra/sweeper=lightopt`` (keys: see the module docstring and lightopt.yaml)."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self._interrupted = False
        self._gpus: int | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ config

    def _get(self, key: str, default: Any = None) -> Any:
        value = self.cfg.get(key, default)
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
        return value

    def _directions(self) -> tuple[list[str], list[str] | None]:
        direction = self._get("direction")
        objectives = self._get("objectives")
        if direction is None:
            if objectives:
                from lightopt.results import metric_direction

                task = OmegaConf.select(self.config, "objective.metric")
                task_dir = OmegaConf.select(self.config, "objective.direction")
                direction = [task_dir if n == task and task_dir else metric_direction(n.split(":")[0])
                             for n in objectives]
                log.info("directions inferred from the objectives' names: %s (set hydra.sweeper.direction "
                         "to choose)", dict(zip(objectives, direction, strict=True)))
            else:
                direction = OmegaConf.select(self.config, "objective.direction") or "minimize"
        directions = [direction] if isinstance(direction, str) else list(direction)
        for d in directions:
            if str(d).lower() not in DIRECTIONS:
                raise ConfigError("hydra.sweeper.direction", direction, "minimize | maximize, or a list of them")
        directions = [str(d).lower() for d in directions]
        if objectives is not None:
            if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
                raise ConfigError("hydra.sweeper.objectives", objectives, "a list of names in results.json")
            if len(objectives) != len(directions):
                raise ConfigError("hydra.sweeper.objectives", objectives,
                                  f"one name per direction ({len(directions)}: {directions})")
        return directions, objectives

    def _check(self) -> None:
        def bad(key: str, allowed: str) -> ConfigError:
            return ConfigError(f"hydra.sweeper.{key}", self.cfg.get(key), allowed)

        n_trials = self.cfg.get("n_trials")
        if n_trials is not None and n_trials < 1:
            raise bad("n_trials", "a number of trials >= 1, or null")
        if self.cfg.get("n_jobs", 1) < 1:
            raise bad("n_jobs", "a number of trials at a time >= 1")
        if not 0.0 <= self.cfg.get("max_failure_rate", 0.5) <= 1.0:
            raise bad("max_failure_rate", "a share in [0, 1]; 1.0 = never stop for failures")
        if self.cfg.get("failure_rate_min_trials", 3) < 1:
            raise bad("failure_rate_min_trials", "a number of finished trials >= 1")
        if self.cfg.get("diverged", "fail") not in ("fail", "worst"):
            raise bad("diverged", "fail | worst")
        if self.cfg.get("heartbeat_interval", 10) < 1:
            raise bad("heartbeat_interval", "seconds >= 1")
        grace = self.cfg.get("grace_period")
        if grace is not None and grace <= self.cfg.get("heartbeat_interval", 10):
            raise bad("grace_period", "seconds > heartbeat_interval, or null for 2 x heartbeat_interval")
        if self.cfg.get("trial") is not None:
            raise bad("trial", "null: the sweeper sets it for each job")

    def _custom_search_space(self) -> Callable[[DictConfig, optuna.Trial], Any] | None:
        path = self.cfg.get("custom_search_space")
        if not path:
            return None
        from hydra.utils import get_method

        try:
            return get_method(path)
        except Exception as err:  # noqa: BLE001
            raise ConfigError("hydra.sweeper.custom_search_space", path,
                              "the dotted path of a function (cfg, trial) -> dict | None", str(err)) from None

    def _instantiate(self, group: str, extra: Mapping[str, Any] | None = None, seed_offset: int = 0) -> Any:
        """Build the sampler or pruner from its config, the seed shifted by ``seed_offset``."""
        from hydra.utils import instantiate

        node = self._get(group)
        base = optuna.samplers.BaseSampler if group == "sampler" else optuna.pruners.BasePruner
        if node is None:
            return None
        if not isinstance(node, dict) or "_target_" not in node:
            raise ConfigError(f"hydra.sweeper.{group}", node, f"a config with the _target_ of an Optuna {group}, "
                              f"e.g. hydra/sweeper/{group}={'tpe' if group == 'sampler' else 'median'}")
        node.pop("_partial_", None)  # hydra-optuna-sweeper's grid config is a partial; here the sweeper fills it
        key, kind = f"hydra.sweeper.{group}", f"optuna.{group}s.{base.__name__}"
        try:
            cls = _locate(node["_target_"])
        except Exception as err:  # noqa: BLE001 - any import failure is the same user error
            raise ConfigError(f"{key}._target_", node["_target_"], f"the dotted path of a subclass of {kind}",
                              f"cannot import it ({_error_text(err.__cause__ or err).splitlines()[0]})") from None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(f"{key}._target_", node["_target_"], f"the dotted path of a subclass of {kind}")
        if group == "sampler" and node.get("seed") is not None:
            node["seed"] = int(node["seed"]) + seed_offset
        node.update(extra or {})
        _drop_unknown_kwargs(node, key)
        try:
            with _quiet():
                return instantiate(node)
        except Exception as err:  # noqa: BLE001 - Hydra wraps the real cause; show it
            raise ConfigError(key, node, f"keyword arguments {cls.__name__} accepts",
                              _error_text(err.__cause__ or err).splitlines()[0]) from None

    def _grid_kind(self) -> str | None:
        """``"brute_force"`` / ``"grid"`` when the sampler enumerates a grid, else None."""
        target = (self._get("sampler") or {}).get("_target_", "")
        try:
            cls = _locate(target)
        except Exception:  # noqa: BLE001 - reported when the sampler is instantiated
            return None
        if issubclass(cls, optuna.samplers.GridSampler):
            return "grid"
        if issubclass(cls, optuna.samplers.BruteForceSampler):
            return "brute_force"
        return None

    # ------------------------------------------------------------------ sweep

    def sweep(self, arguments: list[str]) -> Any:
        from lightopt.distributed import entry_point_for_workers

        try:
            # a DDP trial run by a parallel launcher's worker starts its extra ranks with this program's command
            with entry_point_for_workers():
                return self._sweep(arguments)
        except ConfigError as err:
            print(f"lightopt: config error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG_ERROR)
        except SweepStopped as err:
            log.error("%s", err)
            print(f"lightopt: {err}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        self._check()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        directions, objectives = self._directions()
        space = build_search_space(self._get("params"), arguments, self._get("conditional"),
                                   self._get("search_space"), self.hydra_context.config_loader)
        custom = self._custom_search_space()
        self.validate_batch_is_legal([space.fixed])  # a bad fixed override stops here, with Hydra's message
        grid_kind = self._grid_kind()
        grid_points = self._grid_points(space, grid_kind, custom)
        n_trials = self._n_trials(grid_kind, grid_points, custom, space)
        self._instantiate("sampler", self._grid_extra(grid_kind, space))  # report sampler mistakes up front
        pruner = self._instantiate("pruner") or optuna.pruners.NopPruner()

        storage_url = with_driver(self.cfg.get("storage") or f"sqlite:///{sweep_dir / 'optuna.db'}")
        study_name = self.cfg.get("study_name") or (
            f"{self.config.hydra.job.name}-"
            f"{space.fingerprint(directions, objectives, self.cfg.get('custom_search_space'))}")
        interval = int(self.cfg.get("heartbeat_interval", 10))
        storage = open_storage(storage_url, interval, self.cfg.get("grace_period"))
        if not self.cfg.get("storage"):
            # Trial numbers name the run directories: a second study in this sweep directory would reuse them.
            others = sorted({s.study_name for s in storage.get_all_studies()} - {study_name})
            if others:
                raise ConfigError("hydra.sweep.dir", str(sweep_dir), "a new directory for a different search, or "
                                  f"hydra.sweeper.study_name={others[0]} to continue that study",
                                  f"it holds study {others[0]}, whose search space, fixed overrides or directions "
                                  f"differ from this one's ({study_name})")
        lock = StudyLock.for_storage(storage_url, storage, study_name)
        try:
            study = self._open_study(storage, study_name, directions, pruner, lock)
            log.info("study %s in %s: %d of %d trials exist; sampler %s, pruner %s, %d at a time",
                     study_name, _hide_password(storage_url), len(study.get_trials(deepcopy=False)), n_trials,
                     (self._get("sampler") or {}).get("_target_"), type(pruner).__name__, self.cfg.get("n_jobs", 1))
            log.info("search space: %s; fixed: %s", ", ".join(f"{p.name}={p.source}" + (" (conditional)" if p.when
                     else "") for p in space.params) or "(none)", " ".join(space.fixed) or "(none)")
            run = _Run(self, study, storage, lock, space, custom, n_trials, directions, objectives,
                       sweep_dir, storage_url, study_name, grid_kind, grid_points)
            try:
                return run.loop()
            finally:  # stopped sweeps (failures, Ctrl-C) get their report too
                run.report()
        finally:
            lock.close()

    def _grid_extra(self, grid_kind: str | None, space: SearchSpace) -> dict[str, Any]:
        return {"search_space": space.grid_search_space()} if grid_kind == "grid" else {}

    def _grid_points(self, space: SearchSpace, grid_kind: str | None, custom: Any) -> list[dict[str, Any]] | None:
        """Every grid point in the order they are visited (seeded shuffle), or None when not enumerable."""
        if grid_kind is None:
            return None
        if grid_kind == "grid" and (space.conditional or custom):
            raise ConfigError("hydra.sweeper.sampler._target_", "optuna.samplers.GridSampler",
                              "hydra/sweeper/sampler=grid (BruteForceSampler) for a conditional or custom space")
        size = space.grid_size()  # ConfigError naming a continuous parameter
        if custom is not None:
            return None  # the function may add parameters: Optuna's BruteForceSampler enumerates them
        if size > 1_000_000:
            raise ConfigError("hydra.sweeper.params", f"{size} grid points", "a grid of at most 1,000,000 points")
        points = list(space.grid())
        seed = (self._get("sampler") or {}).get("seed")
        if seed is not None:
            random.Random(seed).shuffle(points)  # an unfinished grid still covers the space evenly
        return points

    def _n_trials(self, grid_kind: str | None, points: list | None, custom: Any, space: SearchSpace) -> int:
        n_trials = self.cfg.get("n_trials")
        if not space.params and custom is None:
            log.info("no parameter is searched (give some as choice(...), interval(...) ...): one trial")
            return 1
        if points is not None:
            if n_trials is not None and n_trials > len(points):
                log.info("n_trials=%d capped at the grid size %d", n_trials, len(points))
            return len(points) if n_trials is None else min(n_trials, len(points))
        if grid_kind is not None and custom is not None and n_trials is None:
            raise ConfigError("hydra.sweeper.n_trials", None, "a number of trials",
                              "with custom_search_space the grid size cannot be counted")
        return DEFAULT_N_TRIALS if n_trials is None else int(n_trials)

    def _open_study(self, storage: optuna.storages.RDBStorage, study_name: str, directions: list[str],
                    pruner: Any, lock: StudyLock) -> optuna.Study:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    pruner=pruner, load_if_exists=True)
        existing = [d.name.lower() for d in study.directions]
        if existing != directions:
            raise ConfigError("hydra.sweeper.direction", directions, f"the study's directions {existing}",
                              f"study {study_name} already exists with other directions; set another study_name")
        if lock.alone:
            # No other sweep process holds the storage's lock: trials still RUNNING belong to a dead sweep.
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    study._storage.set_trial_user_attr(t._trial_id, "error", "its sweep process died")
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    log.warning("trial %d was left running by a sweep that died: marked FAIL", t.number)
        return study

    def _gpu_overrides(self, slot: int) -> list[str]:
        if not self.cfg.get("gpu_per_trial") or self.cfg.get("n_jobs", 1) < 2:
            return []
        if self._gpus is None:
            import torch

            self._gpus = torch.cuda.device_count()
            if self._gpus < 2:
                log.info("gpu_per_trial: %d CUDA device(s), trials keep their trainer.devices", self._gpus)
        return [f"trainer.devices=[{slot % self._gpus}]"] if self._gpus > 1 else []


class _Run:
    """One sweep process's work on a study: reserve, launch, tell, write, until n_trials exist."""

    def __init__(self, sweeper: OptunaSweeper, study: optuna.Study, storage: optuna.storages.RDBStorage,
                 lock: StudyLock, space: SearchSpace, custom: Any, n_trials: int, directions: list[str],
                 objectives: list[str] | None, sweep_dir: Path, storage_url: str, study_name: str,
                 grid_kind: str | None, grid_points: list[dict[str, Any]] | None) -> None:
        self.s, self.study, self.storage, self.lock, self.space = sweeper, study, storage, lock, space
        self.custom, self.n_trials, self.directions, self.objectives = custom, n_trials, directions, objectives
        self.sweep_dir, self.storage_url, self.study_name = sweep_dir, storage_url, study_name
        self.grid_kind, self.grid_points = grid_kind, grid_points
        self.cfg = sweeper.cfg
        self.sampler_ready = False
        self.exhausted = False
        self.numeric_keys = {p.key for p in space.params if p.texts is None}
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.last_error: str | None = None

    # ---------------------------------------------------------------- reservation

    def _reserve(self) -> list[Pending] | None:
        """Create this process's next batch of trials under the study lock; None when n_trials exist."""
        with self.lock.reserving():
            with _quiet():
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if not self.sampler_ready:
                # Seed + trials already there: a resumed sweep or a second worker does not replay the
                # suggestions of the first (a fresh sweep keeps the configured seed).
                self.study.sampler = self.s._instantiate(
                    "sampler", self.s._grid_extra(self.grid_kind, self.space), seed_offset=len(trials))
                self.sampler_ready = True
            n = min(int(self.cfg.get("n_jobs", 1)), self.n_trials - len(trials))
            if n <= 0 or self.exhausted:
                return None
            taken = self._taken(trials) if self.grid_points is not None else set()
            batch = [p for p in (self._new_trial(slot, taken) for slot in range(n)) if p is not None]
            return None if self.exhausted and not batch else batch

    def _point_key(self, params: Mapping[str, Any]) -> frozenset:
        by_name = {p.name: p for p in self.space.params}
        return frozenset((k, by_name[k].text(v) if k in by_name else value_text(v)) for k, v in params.items())

    def _taken(self, trials: Sequence[FrozenTrial]) -> set:
        return {self._point_key(t.params if t.state != TrialState.WAITING else t.system_attrs.get("fixed_params", {}))
                for t in trials}

    def _new_trial(self, slot: int, taken: set) -> Pending | None:
        study = self.study
        if self.grid_points is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            point = next((p for p in self.grid_points if self._point_key(p) not in taken), None)
            if point is None:
                self.exhausted = True
                return None
            taken.add(self._point_key(point))
            study.enqueue_trial(point, skip_if_exists=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)  # beats are ours, not optimize's
            trial = study.ask()
        # a first beat at once: a trial that never beat is never found stale
        self.storage.record_heartbeat(trial._trial_id)
        try:
            overrides = self.space.suggest(trial)
            if self.custom is not None:
                overrides += self._custom_overrides(trial)
        except Exception as err:  # noqa: BLE001 - a bad custom function fails its trial, not the sweep
            self._tell(Pending(trial, []), Outcome(TrialState.FAIL, None, {}, f"search space: {_error_text(err)}"))
            return None
        trial.set_user_attr("overrides", overrides)
        keys = ",".join(quote(line.split("=", 1)[0].lstrip("+~")) for line in overrides)
        contract = [f"hydra.sweeper.storage={quote(self.storage_url)}",
                    f"hydra.sweeper.study_name={quote(self.study_name)}", f"hydra.sweeper.trial={trial.number}",
                    f"hydra.sweeper.searched=[{keys}]"]
        searched = [*overrides, *self.s._gpu_overrides(slot)]
        shape = tuple(key if (key := line.split("=", 1)[0]) in self.numeric_keys else line for line in searched)
        return Pending(trial, [*self.space.fixed, *searched, *contract], shape=shape)

    def _custom_overrides(self, trial: optuna.Trial) -> list[str]:
        known = set(self.space.names)
        extra = self.custom(self.s.config, trial)
        out = [f"{name}={value_text(value)}" for name, value in trial.params.items() if name not in known]
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise TypeError(f"custom_search_space returned {type(extra).__name__}; allowed: a dict or None")
            out += [f"{k}={v if isinstance(v, str) else value_text(v)}" for k, v in extra.items()]
        return out

    # ---------------------------------------------------------------- launch & tell

    def _prepare(self, pending: Pending) -> bool:
        """Compose the trial's config (as the launcher will) to catch composition errors and learn its run dir.

        Trials differing only in numeric values compose alike, so one composition per shape is enough
        (composing takes a good fraction of a second).
        """
        loader = self.s.hydra_context.config_loader  # type: ignore[union-attr]
        cfg = self.composed.get(pending.shape)
        try:
            if cfg is None:
                cfg = loader.load_sweep_config(master_config=self.s.config, sweep_overrides=list(pending.overrides))
                if len(self.composed) > 256:  # shapes are few unless a custom search space adds numbers
                    self.composed.clear()
                self.composed[pending.shape] = cfg
            with open_dict(cfg):
                cfg.hydra.job.num = pending.trial.number
                cfg.hydra.job.id = pending.trial.number
            pending.run_dir = str(Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)).absolute())
        except Exception as err:  # noqa: BLE001 - e.g. a choice naming a config that does not exist
            self._tell(pending, Outcome(TrialState.FAIL, None, {}, f"config: {_error_text(err)}".splitlines()[0]))
            return False
        pending.trial.set_user_attr("run_dir", pending.run_dir)
        return True

    def _launch(self, batch: list[Pending]) -> list[Sequence[JobReturn]]:
        """Launch the batch; job num = trial number (one launch per run of consecutive numbers)."""
        returns = []
        groups: list[list[Pending]] = []
        for p in sorted(batch, key=lambda p: p.trial.number):
            if groups and groups[-1][-1].trial.number + 1 == p.trial.number:
                groups[-1].append(p)
            else:
                groups.append([p])
        for group in groups:
            try:
                rets = self.s.launcher.launch([p.overrides for p in group], initial_job_idx=group[0].trial.number)
            except Exception as err:  # noqa: BLE001 - e.g. a worker process killed for memory: its trials fail
                log.warning("launching trials %s failed: %s", [p.trial.number for p in group], _error_text(err))
                self._tell_unfinished(group, f"launch failed: {_error_text(err)}", "failed")
                continue
            if self.s._interrupted:
                # Ctrl-C reached a job where something swallowed the KeyboardInterrupt (OmegaConf turns one
                # raised while it composes the config into a ConfigKeyError): the sweep still stops here, and
                # trials without a finished run are told "interrupted", not a misleading error
                raise KeyboardInterrupt
            for p, ret in zip(group, rets, strict=True):
                self._tell(p, judge(ret, p.run_dir, self.directions, self.objectives, self.cfg.get("diverged", "fail"),
                                    self.cfg.get("worst_value")))
            returns.append(rets)
        return returns

    def _tell_unfinished(self, batch: Sequence[Pending], why: str, status: str) -> None:
        """Tell each trial not told yet: its results.json if its run finished, else FAIL."""
        for p in batch:
            if p.told:
                continue
            results = read_results(p.run_dir)
            if results is not None and results.get("status") in ("completed", "pruned", "diverged"):
                self._tell(p, judge(None, p.run_dir, self.directions, self.objectives,
                                    self.cfg.get("diverged", "fail"), self.cfg.get("worst_value")))
            else:
                self._tell(p, Outcome(TrialState.FAIL, None, {"run_dir": p.run_dir, "status": status}, why))

    def _tell(self, pending: Pending, outcome: Outcome) -> None:
        trial = pending.trial
        attrs = {k: v for k, v in outcome.attrs.items() if v is not None}
        if outcome.error and "error" not in attrs:
            attrs["error"] = outcome.error[:2000]
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            self.study.tell(trial.number, outcome.values, state=outcome.state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was already marked finished by another sweep process (its heartbeat went "
                        "silent for grace_period); its result is dropped", trial.number)
        except RuntimeError as err:
            if "Study.stop" not in str(err):
                raise
            self.exhausted = True  # BruteForceSampler found the (custom) grid exhausted; the trial is recorded
        pending.told = True
        if outcome.state == TrialState.FAIL:
            self.last_error = attrs.get("error") or outcome.error
            _free_memory()
        self._progress(trial.number, outcome)
        self._write_outputs()

    def _progress(self, number: int, outcome: Outcome) -> None:
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(t.state.is_finished() for t in trials)
        head = f"trial {finished}/{self.n_trials} (#{number}): {outcome.state.name}"
        values = outcome.values
        if outcome.state == TrialState.PRUNED:  # Optuna keeps its last intermediate value
            values = next((t.values for t in trials if t.number == number), None)
        if values is not None:
            head += ", value " + ", ".join(_fmt(v) for v in values)
        elif outcome.state == TrialState.FAIL:
            head += f" ({(outcome.error or outcome.attrs.get('error') or '?').splitlines()[0][:200]})"
        if len(self.directions) == 1:
            try:
                best = self.study.best_trial
                head += f"; best {_fmt(best.value)} (#{best.number})"
            except ValueError:
                head += "; no completed trial yet"
        else:
            front = [t for t in trials if t.state == TrialState.COMPLETE]
            head += f"; Pareto front {len(self.study.best_trials) if front else 0} trials"
        log.info(head)

    def _write_outputs(self) -> list[FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False)
        write_trials_csv(self.sweep_dir / "trials.csv", trials, self.space, self.directions, self.objectives)
        write_optimization_results(self.sweep_dir / "optimization_results.yaml", self.study, trials, self.storage_url)
        return trials

    def _check_failures(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        failed = sum(t.state == TrialState.FAIL for t in finished)
        limit = float(self.cfg.get("max_failure_rate", 0.5))
        if len(finished) >= int(self.cfg.get("failure_rate_min_trials", 3)) and failed / len(finished) > limit:
            raise SweepStopped(
                f"sweep stopped: {failed} of {len(finished)} finished trials failed, more than max_failure_rate="
                f"{limit:g}; the sweep looks broken. Last error: {self.last_error}. Outputs in {self.sweep_dir}",
                EXIT_SWEEP_FAILED)

    def loop(self) -> list[Sequence[JobReturn]]:
        returns: list[Sequence[JobReturn]] = []
        batch: list[Pending] = []
        with self._sigint_flag():
            try:
                while True:
                    reserved = self._reserve()
                    if reserved is None:
                        break
                    batch = reserved  # what an interruption must tell
                    ready = [p for p in reserved if self._prepare(p)]
                    if ready:
                        with Heartbeat(self.storage, [p.trial._trial_id for p in ready],
                                       self.cfg.get("heartbeat_interval", 10)):
                            returns += self._launch(ready)
                    self._check_failures()
            except SweepStopped:
                raise
            except BaseException as err:  # Ctrl-C, a job calling sys.exit: stop cleanly
                if self.s._interrupted or isinstance(err, KeyboardInterrupt):
                    # The interrupted job's frames, kept alive by the traceback, may hold a database read it
                    # never finished: on SQLite a lock that would block the bookkeeping below. Let them go.
                    err.__traceback__ = None
                    gc.collect()
                self._stop(batch, err)
        trials = self._write_outputs()
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if running:
            log.info("trials %s are still running in other sweep processes", running)
        log.info("%d trials in study %s: %s; outputs in %s", len(trials), self.study_name, _counts(trials),
                 self.sweep_dir)
        print_summary(self.study, trials, self.space, self.objectives)
        return returns

    def report(self) -> None:
        """``report.html`` and its pictures, and the W&B sweep-summary run when the trials used W&B.

        Never fails the sweep (:func:`lightopt.report.after_sweep` turns problems into a warning).
        """
        if not self.cfg.get("report", True):
            return
        try:
            from lightopt.report import after_sweep

            after_sweep(self.sweep_dir, self.study, [self.s.config, *self.composed.values()])
        except Exception as err:  # noqa: BLE001 - e.g. matplotlib missing
            log.warning("no sweep report: %s", _error_text(err))

    @contextlib.contextmanager
    def _sigint_flag(self) -> Iterator[None]:
        """Note Ctrl-C before it turns into KeyboardInterrupt (Lightning turns that into SystemExit(1))."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            self.s._interrupted = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop(self, batch: list[Pending], err: BaseException) -> None:
        """The sweep was interrupted: tell every trial of the batch, keep what finished, write the outputs."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the bookkeeping short
        interrupted = self.s._interrupted or isinstance(err, KeyboardInterrupt)
        why = "interrupted (Ctrl-C)" if interrupted else f"sweep stopped by {_error_text(err)}"
        self._tell_unfinished(batch, why, "interrupted")
        if interrupted:
            raise SweepStopped(f"sweep {why}: finished trials are kept in {self.sweep_dir}; run the same command "
                               "again to resume", EXIT_INTERRUPTED) from None
        raise err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Heartbeats and ``fail_stale_trials`` are flagged experimental by Optuna; that warning is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _free_memory() -> None:
    """After a failed trial (out of memory, say) give its memory back before the next one starts."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_WARNED: set[tuple[str, str]] = set()


def _drop_unknown_kwargs(node: dict[str, Any], where: str) -> None:
    """Drop keys the ``_target_`` does not accept, with a warning.

    A ``_target_`` given inline (``sampler: {_target_: optuna.samplers.RandomSampler}``) is merged onto the
    selected group's config, whose other keys (TPE's ``n_startup_trials``...) the new class may not take.
    """
    import inspect

    try:
        params = inspect.signature(_locate(node["_target_"])).parameters.values()
    except Exception:  # noqa: BLE001 - an unimportable target is reported when it is instantiated
        return
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params}
    unknown = [k for k in node if not k.startswith("_") and k not in accepted]
    for key in unknown:
        del node[key]
    if unknown and (where, node["_target_"]) not in _WARNED:
        _WARNED.add((where, node["_target_"]))
        log.warning("%s: %s does not take %s; ignored (left over from the selected config group? choose the "
                    "group, e.g. %s=random, instead of replacing _target_)", where, node["_target_"],
                    ", ".join(unknown), where.replace("hydra.sweeper.", "hydra/sweeper/"))
