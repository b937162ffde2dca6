"""The Optuna sweeper behind ``hydra/sweeper=lightopt``: reads and checks its settings, builds the search space,
sampler and pruner, opens the study, and hands the trials to :class:`lightopt.search.study_loop.SweepLoop`.

Every setting is listed, with its default and meaning, in ``hydra_plugins/lightopt_sweeper/conf/hydra/sweeper/
lightopt.yaml``; what a sweep writes and how trials are judged is in the README ("Hyperparameter search").
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from lightopt.checks import writable_dir
from lightopt.cli import EXIT_CONFIG_ERROR
from lightopt.errors import ConfigError
from lightopt.formatting import error_text
from lightopt.objective import DIRECTIONS, metric_direction
from lightopt.run.ranks import own_entry_point
from lightopt.run.task import objective_of
from lightopt.search.composing import TrialConfigs
from lightopt.search.locks import StudyLock
from lightopt.search.seeding import enqueue, enqueued_line, ran_trials, warm_start
from lightopt.search.space import SearchSpace, build_search_space
from lightopt.search.stopping import StopRules
from lightopt.search.study_loop import DIED, SweepLoop, SweepPlan, SweepStopped, failure_rule, quiet_experimental
from lightopt.search.workers import cpu_threads, worker_command
from lightopt.storage import (
    PASSWORD_ENV,
    hide_password,
    hide_passwords,
    open_storage,
    password_of,
    with_driver,
    with_password,
)

log = logging.getLogger(__name__)

DEFAULT_N_TRIALS = 20
#: samplers of hydra-optuna-sweeper's configs that Optuna no longer has -> what to choose instead
REMOVED = {"optuna.samplers.MOTPESampler": "hydra/sweeper/sampler=tpe (it takes several objectives; "
           "hydra.sweeper.sampler.multivariate=true models them jointly) or hydra/sweeper/sampler=nsgaii"}


class OptunaSweeper(Sweeper):
    """The sweeper behind ``hydra/sweeper=lightopt`` (keys: see the module docstring and lightopt.yaml)."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self._warned: set[tuple[str, str]] = set()  # (key, _target_) already warned about
        self._gpus: int | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

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
            # lightopt's train config: its objective (the data's task decides what is left open); another app's
            # config without an objective section: minimize its return value
            task, task_dir = (objective_of(self.config) if OmegaConf.select(self.config, "objective") is not None
                              else (None, "minimize"))
            if objectives:
                direction = [task_dir if n == task else metric_direction(n.split(":")[0]) for n in objectives]
                log.info("directions inferred from the objectives' names: %s (set hydra.sweeper.direction "
                         "to choose)", dict(zip(objectives, direction, strict=True)))
            else:
                direction = task_dir
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

        optimized = OmegaConf.select(self.config, "optimized_metric")
        metric = objective_of(self.config)[0] if OmegaConf.select(self.config, "objective") is not None else None
        if optimized is not None and metric is not None and optimized != metric:  # lightning-hydra-template's key
            raise ConfigError("optimized_metric", optimized, f"objective.metric={optimized} (and objective.direction), "
                              "the key lightopt's runs are judged by", f"it differs from objective.metric={metric!r}")
        n_trials = self.cfg.get("n_trials")
        if n_trials is not None and n_trials < 1:
            raise bad("n_trials", "a number of trials >= 1, or null")
        if self.cfg.get("n_jobs", 1) < 1:
            raise bad("n_jobs", "a number of trials at a time >= 1")
        worker = self.cfg.get("worker")
        if worker is not None and not 1 <= worker < self.cfg.get("n_jobs", 1):
            raise bad("worker", f"null, or 1 to n_jobs - 1 = {self.cfg.get('n_jobs', 1) - 1} (set by the first "
                      "process on the workers it starts)")
        limit, min_trials = failure_rule(self.cfg)
        if not 0.0 <= limit <= 1.0:
            raise bad("max_failure_rate", "a share in [0, 1]; 1.0 = never stop for failures; null for 0.5")
        if min_trials < 1:
            raise bad("failure_rate_min_trials", "a number of finished trials >= 1, or null")
        if self.cfg.get("diverged", "fail") not in ("fail", "worst"):
            raise bad("diverged", "fail | worst")
        if self.cfg.get("heartbeat_interval", 10) < 1:
            raise bad("heartbeat_interval", "seconds >= 1")
        grace = self.cfg.get("grace_period")
        if grace is not None and grace <= self.cfg.get("heartbeat_interval", 10):
            raise bad("grace_period", "seconds > heartbeat_interval, or null for 2 x heartbeat_interval")

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
        node = {k: v for k, v in node.items() if v is not None}  # null: the class's own default
        key, kind = f"hydra.sweeper.{group}", f"optuna.{group}s.{base.__name__}"
        if node["_target_"] in REMOVED:
            raise ConfigError(f"{key}._target_", node["_target_"], REMOVED[node["_target_"]],
                              "removed from Optuna 4")
        try:
            cls = get_object(node["_target_"])
        except Exception as err:  # noqa: BLE001 - any import failure is the same user error
            raise ConfigError(f"{key}._target_", node["_target_"], f"the dotted path of a subclass of {kind}",
                              f"cannot import it ({error_text(err.__cause__ or err).splitlines()[0]})") from None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(f"{key}._target_", node["_target_"], f"the dotted path of a subclass of {kind}")
        if group == "sampler" and node.get("seed") is not None:
            node["seed"] = int(node["seed"]) + seed_offset
        node.update(extra or {})
        self._check_kwargs(node, key, cls)
        try:
            with quiet_experimental():
                return instantiate(node)
        except Exception as err:  # noqa: BLE001 - Hydra wraps the real cause; show it
            raise ConfigError(key, node, f"keyword arguments {cls.__name__} accepts",
                              error_text(err.__cause__ or err).splitlines()[0]) from None

    def _grid_kind(self) -> str | None:
        """``"brute_force"`` / ``"grid"`` when the sampler enumerates a grid, else None."""
        target = (self._get("sampler") or {}).get("_target_", "")
        try:
            cls = get_object(target)
        except Exception:  # noqa: BLE001 - reported when the sampler is instantiated
            return None
        if issubclass(cls, optuna.samplers.GridSampler):
            return "grid"
        if issubclass(cls, optuna.samplers.BruteForceSampler):
            return "brute_force"
        return None

    # ------------------------------------------------------------------ sweep

    def sweep(self, arguments: list[str]) -> Any:
        try:
            with self._password_off_disk():
                return self._sweep(arguments)
        except ConfigError as err:
            print(f"lightopt: config error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG_ERROR)
        except SweepStopped as err:
            log.error("%s", err)
            print(f"lightopt: {err}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)

    @contextlib.contextmanager
    def _password_off_disk(self) -> Iterator[None]:
        """While the sweep runs, keep the storage's password out of every record of it.

        The password leaves the sweeper's settings, the master config (hence ``multirun.yaml`` and every job's
        ``.hydra/hydra.yaml``) and this process's ``sys.argv`` (which W&B records), and goes into the
        environment variable the sweep's processes read it from (:func:`lightopt.storage.with_password`).
        """
        password = password_of(str(self.cfg.get("storage") or ""))
        if password is None:
            yield
            return
        assert self.config is not None
        self.cfg["storage"] = hide_password(str(self.cfg["storage"]))
        with open_dict(self.config):
            self.config.hydra.sweeper.storage = self.cfg["storage"]
            self.config.hydra.overrides.hydra = [hide_passwords(o) for o in self.config.hydra.overrides.hydra]
        saved_argv, saved_env = list(sys.argv), os.environ.get(PASSWORD_ENV)
        sys.argv[:] = [hide_passwords(a) for a in sys.argv]
        os.environ[PASSWORD_ENV] = password
        try:
            yield
        finally:
            sys.argv[:] = saved_argv
            if saved_env is None:
                os.environ.pop(PASSWORD_ENV, None)
            else:
                os.environ[PASSWORD_ENV] = saved_env

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        self._check()
        sweep_dir = writable_dir("hydra.sweep.dir", Path(str(self.config.hydra.sweep.dir)).absolute())
        worker = self.cfg.get("worker")
        if worker is None:  # the first process's config: a worker's differs only in what it was told
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        directions, objectives = self._directions()
        stop_rules = StopRules.of(self.cfg, len(directions))
        space = build_search_space(self._get("params"), arguments, self._get("conditional"),
                                   self._get("search_space"), self.hydra_context.config_loader)
        custom = self._custom_search_space()
        self.validate_batch_is_legal([space.fixed])  # a bad fixed override stops here, with Hydra's message
        grid_kind = self._grid_kind()
        grid_points = self._grid_points(space, grid_kind, custom)
        n_trials = self._n_trials(grid_kind, grid_points, custom, space)
        self._instantiate("sampler", self._grid_extra(grid_kind, space))  # report sampler mistakes up front
        pruner = self._instantiate("pruner") or optuna.pruners.NopPruner()

        storage_url = with_password(with_driver(self.cfg.get("storage") or f"sqlite:///{sweep_dir / 'optuna.db'}"))
        study_name = self.cfg.get("study_name") or (
            f"{self.config.hydra.job.name}-"
            f"{space.fingerprint(directions, objectives, self.cfg.get('custom_search_space'))}")
        interval = int(self.cfg.get("heartbeat_interval", 10))
        storage = open_storage(storage_url, interval, self.cfg.get("grace_period"))
        if not self.cfg.get("storage"):
            _check_one_study_per_dir(sweep_dir, storage, study_name)
        lock = StudyLock.for_storage(storage_url, storage, study_name)
        try:
            study = self._open_study(storage, study_name, directions, pruner, lock)
            _check_run_dirs_known(sweep_dir, study, hide_password(storage_url))
            existing = len(ran_trials(study.get_trials(deepcopy=False)))
            with lock.reserving():  # one process seeds a new study
                seeded = [warm_start(study, space, self._get("warm_start"), storage_url),
                          enqueued_line(enqueue(study, space, self._get("enqueue")))]
            self._log_start(study_name, hide_password(storage_url), existing, n_trials, pruner, seeded, space)
            configs = TrialConfigs(self.hydra_context.config_loader, space.numeric_keys())
            run = SweepLoop(SweepPlan(
                cfg=self.cfg, config=self.config, configs=configs, launcher=self._launcher(configs), study=study,
                storage=storage, lock=lock, space=space, custom=custom, n_trials=n_trials, directions=directions,
                objectives=objectives, sweep_dir=sweep_dir,
                storage_url=storage_url, study_name=study_name, grid_points=grid_points, pruner=self._get("pruner"),
                make_sampler=lambda offset: self._instantiate("sampler", self._grid_extra(grid_kind, space), offset),
                stop_rules=stop_rules, device_overrides=self._gpu_overrides(worker or 0),
                threads=cpu_threads(int(self.cfg.get("n_jobs", 1))),
                worker_commands=self._worker_commands(study_name, storage_url, sweep_dir),
                # a DDP trial run by a parallel launcher's worker starts its extra ranks with this program's command
                entry_point=tuple(own_entry_point())))
            try:
                return run.loop()
            finally:  # stopped sweeps (failures, Ctrl-C) get their report too
                if worker is None:
                    run.report()
        finally:
            lock.close()

    def _log_start(self, study_name: str, storage: str, existing: int, n_trials: int, pruner: Any,
                   seeded: Sequence[str | None], space: SearchSpace) -> None:
        log.info("study %s in %s: %d of %d trials exist; sampler %s, pruner %s, %d at a time%s", study_name, storage,
                 existing, n_trials, (self._get("sampler") or {}).get("_target_"), type(pruner).__name__,
                 self.cfg.get("n_jobs", 1), "".join(f"; {line}" for line in seeded if line))
        log.info("search space: %s; fixed: %s", ", ".join(f"{p.name}={p.source}" + (" (conditional)" if p.when
                 else "") for p in space.params) or "(none)", " ".join(space.fixed) or "(none)")

    def _launcher(self, configs: TrialConfigs) -> Any:
        """The launcher of the sweep's jobs, composing their configs through ``configs``."""
        from hydra.core.plugins import Plugins

        assert self.hydra_context is not None and self.task_function is not None
        context = HydraContext(config_loader=configs, callbacks=self.hydra_context.callbacks)
        return Plugins.instance().instantiate_launcher(hydra_context=context, task_function=self.task_function,
                                                       config=self.config)

    def _worker_commands(self, study_name: str, storage_url: str, sweep_dir: Path) -> list[list[str]]:
        """The commands of the n_jobs - 1 workers the first process starts (none in a worker)."""
        if self.cfg.get("worker") is not None:
            return []
        return [worker_command(own_entry_point(), sys.argv[1:], k, study_name=study_name,
                               storage=hide_password(storage_url), sweep_dir=sweep_dir)
                for k in range(1, int(self.cfg.get("n_jobs", 1)))]

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
        if points is not None:
            if n_trials is not None and n_trials > len(points):
                log.info("n_trials=%d capped at the grid size %d", n_trials, len(points))
            return len(points) if n_trials is None else min(n_trials, len(points))
        if not space.params and custom is None:
            if n_trials is None:
                log.info("no parameter is searched (give some as choice(...), interval(...) ...): one trial; "
                         "hydra.sweeper.n_trials=N repeats the config N times")
                return 1
            return int(n_trials)  # repeats of one config (e.g. its seed variance), as hydra-optuna-sweeper runs
        if grid_kind is not None and custom is not None and n_trials is None:
            raise ConfigError("hydra.sweeper.n_trials", None, "a number of trials",
                              "with custom_search_space the grid size cannot be counted")
        return DEFAULT_N_TRIALS if n_trials is None else int(n_trials)

    def _open_study(self, storage: optuna.storages.RDBStorage, study_name: str, directions: list[str],
                    pruner: Any, lock: StudyLock) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's own first line says what was opened
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
                    study._storage.set_trial_user_attr(t._trial_id, "error", DIED)
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

    def _check_kwargs(self, node: dict[str, Any], where: str, cls: type) -> None:
        """Refuse a key ``cls`` does not take, naming the keys it does.

        One exception: with ``_target_`` replaced on the command line (``hydra.sweeper.sampler._target_=...``),
        keys of the selected group's file that the new class does not take are left over, not the user's: they
        are dropped with a warning. Keys given on the command line are always checked.
        """
        import inspect

        params = inspect.signature(cls).parameters.values()
        if any(p.kind == p.VAR_KEYWORD for p in params):
            return
        accepted = {p.name for p in params}
        unknown = [k for k in node if not k.startswith("_") and k not in accepted]
        given = self._command_line_keys(where) if unknown else set()
        if "_target_" in given:
            leftovers = [k for k in unknown if k not in given]
            for k in leftovers:
                del node[k]
            if leftovers and (where, node["_target_"]) not in self._warned:
                self._warned.add((where, node["_target_"]))
                log.warning("%s: %s does not take %s, left from the selected config group; dropped (choose the "
                            "group instead, e.g. %s=random)", where, node["_target_"], ", ".join(leftovers),
                            where.replace("hydra.sweeper.", "hydra/sweeper/"))
            unknown = [k for k in unknown if k in given]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", node[unknown[0]], f"a keyword argument of {cls.__name__}: "
                              f"{', '.join(sorted(accepted - {'search_space'}))}", f"{cls.__name__} does not take it")

    def _command_line_keys(self, where: str) -> set[str]:
        """The keys under ``where`` that the command line sets (``hydra.sweeper.sampler.seed=3`` -> ``seed``)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        assert self.config is not None
        overrides = OverridesParser.create().parse_overrides(list(self.config.hydra.overrides.hydra))
        prefix = f"{where}."
        return {o.key_or_group[len(prefix):].split(".")[0] for o in overrides if o.key_or_group.startswith(prefix)}


def _check_one_study_per_dir(sweep_dir: Path, storage: optuna.storages.RDBStorage, study_name: str) -> None:
    """Trial numbers name the run directories: a second study in this sweep directory would reuse them."""
    others = sorted({s.study_name for s in storage.get_all_studies()} - {study_name})
    if others:
        raise ConfigError("hydra.sweep.dir", str(sweep_dir), "a new directory for a different search, or "
                          f"hydra.sweeper.study_name={others[0]} to continue that study",
                          f"it holds study {others[0]}, whose search space, fixed overrides or directions "
                          f"differ from this one's ({study_name})")


def _check_run_dirs_known(sweep_dir: Path, study: optuna.Study, storage_shown: str) -> None:
    """Refuse a sweep directory holding trial run directories its study does not know.

    Trial numbers name the run directories: a replaced, emptied or damaged database would start again at
    trial 0, dropping the earlier trials from the outputs and running new ones into their directories.
    """
    known = {t.number for t in study.get_trials(deepcopy=False)}
    unknown = sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit() and p.is_dir()
                     and int(p.name) not in known and (p / ".hydra").is_dir())
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
        raise ConfigError("hydra.sweep.dir", str(sweep_dir), "a new directory to start a fresh sweep, or the "
                          "storage that holds this directory's trials (hydra.sweeper.storage)",
                          f"it holds the run directories of trials {shown}, which study {study.study_name} in "
                          f"{storage_shown} does not know (was its database replaced or emptied?)")
