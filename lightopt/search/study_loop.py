"""The sweep loop of one sweep process: reserve trials under the study lock, compose and launch their jobs, judge
and tell each, write the outputs after every trial, stop cleanly on failures and Ctrl-C.

What to search and how (sampler, pruner, study, storage) is decided by :mod:`lightopt.search.sweeper`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, open_dict
from optuna.trial import FrozenTrial, TrialState

from lightopt.cli import EXIT_SIGINT, EXIT_SIGTERM
from lightopt.contract import RunResult, TrialContext
from lightopt.formatting import error_text, fmt
from lightopt.search.composing import TrialConfigs
from lightopt.search.locks import Heartbeat, StudyLock
from lightopt.search.outcome import FINISHED_STATUSES, Outcome, judge
from lightopt.search.outputs import RunningOutputs, print_summary
from lightopt.search.seeding import ran_trials
from lightopt.search.space import SearchSpace, value_text
from lightopt.search.stopping import StopRules
from lightopt.search.trials import TrialRow, state_counts
from lightopt.search.workers import Workers
from lightopt.storage import hide_password

log = logging.getLogger(__name__)

EXIT_SWEEP_FAILED = 1
DIED = "its sweep process died"  # the error of a trial left RUNNING by a sweep process that died


def failure_rule(cfg: Any) -> tuple[float, int]:
    """``(max_failure_rate, failure_rate_min_trials)`` in effect: 0.5 after 3 finished trials by default; a rate
    given explicitly is hydra-optuna-sweeper's rule, judged from the first finished trial."""
    rate, min_trials = cfg.get("max_failure_rate"), cfg.get("failure_rate_min_trials")
    if rate is None:
        return 0.5, 3 if min_trials is None else int(min_trials)
    return float(rate), 1 if min_trials is None else int(min_trials)


class SweepStopped(Exception):
    """The sweep ended before n_trials: too many failures, or an interruption (carries the exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Pending:
    """A reserved trial: the Optuna trial, its job overrides, the context its job gets, where its run writes."""

    trial: optuna.Trial
    overrides: list[str]
    context: TrialContext
    run_dir: str | None = None
    told: bool = False


@dataclass
class SweepPlan:
    """What the sweeper decided before the first trial; :class:`SweepLoop` works it off."""

    cfg: Mapping[str, Any]  # the sweeper's settings (hydra.sweeper)
    config: DictConfig  # the sweep's master config
    configs: TrialConfigs  # composes each trial's config (the launcher's config loader too)
    launcher: Any  # Hydra's launcher
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    lock: StudyLock
    space: SearchSpace
    custom: Callable[[DictConfig, optuna.Trial], Any] | None
    n_trials: int
    directions: list[str]
    objectives: list[str] | None
    sweep_dir: Path
    storage_url: str
    study_name: str
    grid_points: list[dict[str, Any]] | None
    pruner: dict[str, Any] | None  # the pruner config the jobs rebuild
    make_sampler: Callable[[int], optuna.samplers.BaseSampler]  # seed offset -> sampler
    entry_point: tuple[str, ...] = ()
    stop_rules: StopRules = field(default_factory=StopRules)
    device_overrides: list[str] = field(default_factory=list)  # this process's trainer.devices (gpu_per_trial)
    threads: int | None = None  # torch threads per trial (cores shared by n_jobs trials), None for torch's own
    worker_commands: list[list[str]] = field(default_factory=list)  # the worker processes this process starts


class SweepLoop:
    """One sweep process's work on a study: reserve, launch, tell, write, until n_trials exist."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.study, self.storage, self.lock, self.space = plan.study, plan.storage, plan.lock, plan.space
        self.custom, self.n_trials, self.directions = plan.custom, plan.n_trials, plan.directions
        self.objectives, self.sweep_dir, self.storage_url = plan.objectives, plan.sweep_dir, plan.storage_url
        self.study_name, self.grid_points, self.cfg = plan.study_name, plan.grid_points, plan.cfg
        self.interrupted = False
        self.signal_name: str | None = None  # SIGINT or SIGTERM, once one stopped the sweep
        self.sampler_ready = False
        self.exhausted = False
        self.last_error: str | None = None
        self.ended: str | None = None  # why no further trial started, when not n_trials
        self.workers: Workers | None = None
        self.outputs = RunningOutputs(plan.sweep_dir, len(plan.directions), plan.objectives, plan.space.names,
                                      plan.storage_url)

    # ---------------------------------------------------------------- reservation

    def _reserve(self) -> list[Pending] | None:
        """Create this process's next batch of trials under the study lock; None when n_trials exist."""
        with self.lock.reserving():
            with quiet_experimental():
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if not self.sampler_ready:
                # Seed + trials already there: a resumed sweep or a second worker does not replay the
                # suggestions of the first (a fresh sweep keeps the configured seed).
                self.study.sampler = self.plan.make_sampler(len(trials))
                self.sampler_ready = True
            # one trial at a time per process: with n_jobs > 1 the other trials in flight are the workers'
            n = min(1, self.n_trials - len(ran_trials(trials)))
            if n <= 0 or self.exhausted:
                return None
            reason = self.plan.stop_rules.reason(trials, self.directions == ["maximize"])
            if reason is not None:
                self.ended = reason
                return None
            taken = self._taken(trials) if self.grid_points is not None else set()
            batch = [p for p in (self._new_trial(taken) for _ in range(n)) if p is not None]
            return None if self.exhausted and not batch else batch

    def _point_key(self, params: Mapping[str, Any]) -> frozenset:
        by_name = {p.name: p for p in self.space.params}
        return frozenset((k, by_name[k].text(v) if k in by_name else value_text(v)) for k, v in params.items())

    def _taken(self, trials: Sequence[FrozenTrial]) -> set:
        return {self._point_key(t.params if t.state != TrialState.WAITING else t.system_attrs.get("fixed_params", {}))
                for t in trials}

    def _new_trial(self, taken: set) -> Pending | None:
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
            self._tell(Pending(trial, []), Outcome(TrialState.FAIL, None, {}, f"search space: {error_text(err)}"))
            return None
        trial.set_user_attr("overrides", overrides)
        keys = tuple(line.split("=", 1)[0].lstrip("+~") for line in overrides)
        context = TrialContext(hide_password(self.storage_url), self.study_name, trial.number, self.plan.pruner, keys,
                               self.plan.entry_point, threads=self.plan.threads)
        return Pending(trial, [*self.space.fixed, *overrides, *self.plan.device_overrides], context)

    def _custom_overrides(self, trial: optuna.Trial) -> list[str]:
        known = set(self.space.names)
        extra = self.custom(self.plan.config, trial)
        out = [f"{name}={value_text(value)}" for name, value in trial.params.items() if name not in known]
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise TypeError(f"custom_search_space returned {type(extra).__name__}; allowed: a dict or None")
            out += [f"{k}={v if isinstance(v, str) else value_text(v)}" for k, v in extra.items()]
        return out

    # ---------------------------------------------------------------- launch & tell

    def _prepare(self, pending: Pending) -> bool:
        """Compose the trial's config (as the launcher will) to catch composition errors and learn its run dir."""
        try:
            cfg = self.plan.configs.load_sweep_config(self.plan.config, list(pending.overrides))
            with open_dict(cfg):
                cfg.hydra.job.num = pending.trial.number
                cfg.hydra.job.id = pending.trial.number
            pending.run_dir = str(Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)).absolute())
        except Exception as err:  # noqa: BLE001 - e.g. a choice naming a config that does not exist
            self._tell(pending, Outcome(TrialState.FAIL, None, {}, f"config: {error_text(err)}".splitlines()[0]))
            return False
        pending.trial.set_user_attr("run_dir", pending.run_dir)
        pending.context = replace(pending.context, run_dir=pending.run_dir)
        pending.context.write(pending.run_dir)  # the job reads it once it starts: which trial it runs
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
                rets = self.plan.launcher.launch([p.overrides for p in group], initial_job_idx=group[0].trial.number)
            except Exception as err:  # noqa: BLE001 - e.g. a worker process killed for memory: its trials fail
                log.warning("launching trials %s failed: %s", [p.trial.number for p in group], error_text(err))
                self._tell_unfinished(group, f"launch failed: {error_text(err)}", "failed")
                continue
            if self.interrupted:
                # Ctrl-C reached a job where something swallowed the KeyboardInterrupt (OmegaConf turns one
                # raised while it composes the config into a ConfigKeyError): the sweep still stops here, and
                # trials without a finished run are told "interrupted", not a misleading error
                raise KeyboardInterrupt
            for p, ret in zip(group, rets, strict=True):
                self._tell(p, judge(ret, p.run_dir, self.directions, self.objectives, self.cfg.get("diverged", "fail"),
                                    self.cfg.get("worst_value")))
                # a job's composed configs are the bulk of what it leaves in memory: held for hundreds of
                # trials they made every garbage collection, hence every later trial, slower
                ret.cfg = ret.hydra_cfg = None
            returns.append(rets)
        return returns

    def _tell_unfinished(self, batch: Sequence[Pending], why: str, status: str) -> None:
        """Tell each trial not told yet: its results.json if its run finished, else FAIL."""
        for p in batch:
            if p.told:
                continue
            result = RunResult.read(p.run_dir)
            if result is not None and result.status in FINISHED_STATUSES:
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
        finished = sum(t.state.is_finished() for t in ran_trials(trials))
        head = f"trial {finished}/{self.n_trials} (#{number}): {outcome.state.name}"
        values = outcome.values
        if outcome.state == TrialState.PRUNED:  # Optuna keeps its last intermediate value
            values = next((t.values for t in trials if t.number == number), None)
        if values is not None:
            head += ", value " + ", ".join(fmt(v, 6) for v in values)
        elif outcome.state == TrialState.FAIL:
            head += f" ({(outcome.error or outcome.attrs.get('error') or '?').splitlines()[0][:200]})"
        if len(self.directions) == 1:
            try:
                best = self.study.best_trial
                head += f"; best {fmt(best.value, 6)} (#{best.number})"
            except ValueError:
                head += "; no completed trial yet"
        else:
            front = [t for t in trials if t.state == TrialState.COMPLETE]
            head += f"; Pareto front {len(self.study.best_trials) if front else 0} trials"
        params = next((t.params for t in trials if t.number == number), {})
        if params:
            head += " | " + " ".join(f"{k}={fmt(v)}" for k, v in params.items())
        log.info(head)

    def _write_outputs(self) -> tuple[list[FrozenTrial], list[TrialRow]]:
        trials = self.study.get_trials(deepcopy=False)
        return trials, self.outputs.write(self.study, trials, self.ended)

    def _check_failures(self) -> None:
        trials = ran_trials(self.study.get_trials(deepcopy=False))
        # a trial stopped by a signal or by its sweep process's death says nothing about the search
        finished = [t for t in trials if t.state.is_finished() and t.user_attrs.get("status") != "interrupted"
                    and t.user_attrs.get("error") != DIED]
        failed = sum(t.state == TrialState.FAIL for t in finished)
        limit, min_trials = failure_rule(self.cfg)
        if len(finished) >= min_trials and failed / len(finished) > limit:
            raise SweepStopped(
                f"sweep stopped: {failed} of {len(finished)} finished trials failed, more than max_failure_rate="
                f"{limit:g}; the sweep looks broken. Last error: {self.last_error}. Outputs in {self.sweep_dir}",
                EXIT_SWEEP_FAILED)

    def loop(self) -> list[Sequence[JobReturn]]:
        returns: list[Sequence[JobReturn]] = []
        batch: list[Pending] = []
        with self._sigint_flag(), _launcher_quiet(self.plan.launcher):
            try:
                self._start_workers()
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
                self._wait_for_workers()
            except SweepStopped:
                self._end_workers()
                raise
            except BaseException as err:  # noqa: BLE001 - Ctrl-C, a job calling sys.exit: stop cleanly
                if self.interrupted or isinstance(err, KeyboardInterrupt):
                    # The interrupted job's frames, kept alive by the traceback, may hold a database read it
                    # never finished: on SQLite a lock that would block the bookkeeping below. Let them go.
                    err.__traceback__ = None
                    gc.collect()
                self._stop(batch, err)
        if self.ended is not None:
            log.info("sweep ended early: %s", self.ended)
        trials, rows = self._write_outputs()
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if running:
            log.info("trials %s are still running in other sweep processes", running)
        log.info("%d trials in study %s: %s; outputs in %s", len(trials), self.study_name,
                 state_counts(rows), self.sweep_dir)
        print_summary(self.study, trials, self.space.names, self.objectives)
        own = ran_trials(trials)
        failed = sum(t.state == TrialState.FAIL for t in own)
        if failed and not running and not any(t.state == TrialState.COMPLETE for t in own):
            raise SweepStopped(f"sweep ended with no completed trial ({failed} failed); the sweep looks broken. "
                               f"Last error: {self.last_error}. Outputs in {self.sweep_dir}", EXIT_SWEEP_FAILED)
        return returns

    def report(self) -> None:
        """``report.html`` and its pictures, and the W&B sweep-summary run when the trials used W&B.

        Never fails the sweep (:func:`lightopt.search.report.after_sweep` turns problems into a warning).
        """
        if not self.cfg.get("report", True):
            return
        try:
            from lightopt.search.report import after_sweep

            after_sweep(self.sweep_dir, self.study, [self.plan.config, *self.plan.configs.configs()])
        except Exception as err:  # noqa: BLE001 - e.g. matplotlib missing
            log.warning("no sweep report: %s", error_text(err))

    def _start_workers(self) -> None:
        if self.plan.worker_commands:
            self.workers = Workers.start(self.plan.worker_commands, self.sweep_dir)
            log.info("%d more sweep processes run trials on this study (their logs: %s)", len(self.workers.processes),
                     ", ".join(p.name for p in self.workers.logs))

    def _wait_for_workers(self) -> None:
        """This process starts no more trials: wait for the workers' last ones (their results are in the study)."""
        if self.workers is None:
            return
        codes = self.workers.wait()
        failed = [(log_path.name, code) for log_path, code in zip(self.workers.logs, codes, strict=True) if code]
        if failed:
            log.warning("worker processes ended with an error: %s", ", ".join(f"{n} (exit {c})" for n, c in failed))

    def _end_workers(self, signum: int = signal.SIGTERM) -> None:
        """Stop the workers as this process stops (their running trials are recorded) and wait for them."""
        if self.workers is None:
            return
        self.workers.stop(signum)
        if None in self.workers.wait(timeout=120):
            self.workers.stop(signal.SIGKILL)

    @contextlib.contextmanager
    def _sigint_flag(self) -> Iterator[None]:
        """Note Ctrl-C or SIGTERM before it turns into KeyboardInterrupt (Lightning turns that into SystemExit(1));
        the sweep then exits 130 or 143. Lightning keeps this handler under its own SIGTERM handler in a run."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: Any) -> None:
            self.interrupted, self.signal_name = True, signal.Signals(signum).name
            raise KeyboardInterrupt

        for s in previous:
            signal.signal(s, on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop(self, batch: list[Pending], err: BaseException) -> None:
        """The sweep was interrupted: tell every trial of the batch, keep what finished, write the outputs."""
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the bookkeeping short
                signal.signal(s, signal.SIG_IGN)
        interrupted = self.interrupted or isinstance(err, KeyboardInterrupt)
        sigterm = self.signal_name == "SIGTERM"
        why = ("interrupted (SIGTERM)" if sigterm else "interrupted (Ctrl-C)") if interrupted else (
            f"sweep stopped by {error_text(err)}")
        self._tell_unfinished(batch, why, "interrupted")
        self._end_workers(signal.SIGTERM if sigterm or not interrupted else signal.SIGINT)
        if interrupted:
            raise SweepStopped(f"sweep {why}: finished trials are kept in {self.sweep_dir}; run the same command "
                               "again to resume", EXIT_SIGTERM if sigterm else EXIT_SIGINT) from None
        raise err



@contextlib.contextmanager
def _launcher_quiet(launcher: Any) -> Iterator[None]:
    """The launcher's "Launching 1 jobs" lines off the console: the sweep prints one line per trial, with its
    parameters (warnings still show)."""
    logger = logging.getLogger(type(launcher).__module__.rsplit(".", 1)[0])
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
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
