"""Pruning of hyperparameter-search trials: stop a run early when its trial is doing worse than others.

During a sweep each run is one trial of an Optuna study kept in a storage (an SQL database URL) that
the sweeper and the runs share. :func:`attach_trial` re-attaches a run to its trial from the Hydra
config (``hydra.sweeper.storage``, ``study_name``, ``trial`` and ``pruner``), using nothing but the
storage, so it works when the run is a separate process from the sweeper. :class:`OptunaPruning` is the
Lightning callback that reports the objective to the trial after each validation and stops training
when the study's pruner says so; :mod:`lightopt.train` then writes ``status: pruned`` into
``results.json``, which the sweeper turns into a pruned trial. Optuna is imported only inside a sweep.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from lightopt.errors import ConfigError
from lightopt.results import check_direction

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

_NO_PRUNER = (None, "none", "null", "")


@dataclass(frozen=True)
class SweepTrial:
    """Where a run's trial lives: the sweeper's ``hydra.sweeper`` keys of the current job."""

    storage: str
    study_name: str
    number: int
    pruner: Any = None  # an Optuna pruner config with _target_, or None

    def load_study(self) -> optuna.Study:
        """The study from the storage, with this sweep's pruner (a no-op pruner when there is none)."""
        import optuna

        from lightopt.sweeper import open_storage  # here: the sweeper module imports this one

        # The run samples nothing (its parameters arrive as overrides), so a random sampler avoids
        # building a model-based sampler just to attach to the trial.
        return optuna.load_study(
            study_name=self.study_name,
            # the sweep and its other jobs write to the same SQLite file: wait for its lock, do not fail
            storage=open_storage(self.storage),
            sampler=optuna.samplers.RandomSampler(),
            pruner=build_pruner(self.pruner),
        )

    def attach(self) -> optuna.trial.Trial | None:
        """A handle on the running trial, or ``None`` for a multi-objective study (Optuna cannot prune those)."""
        import optuna

        study = self.load_study()
        if len(study.directions) > 1:
            log.info("study %r has %d objectives: trials are not pruned", self.study_name, len(study.directions))
            return None
        try:
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        except KeyError:
            raise ConfigError(
                "hydra.sweeper.trial", self.number, f"the number of a trial of study {self.study_name!r}",
                "the study has no such trial",
            ) from None
        return optuna.trial.Trial(study, trial_id)


def build_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    """Instantiate ``hydra.sweeper.pruner``: ``null``/``none`` gives a pruner that never prunes."""
    import optuna
    from hydra.utils import instantiate

    if cfg is None or (isinstance(cfg, str) and cfg.strip().lower() in _NO_PRUNER):
        return optuna.pruners.NopPruner()
    allowed = "null, none, or an Optuna pruner config with _target_ (e.g. optuna.pruners.MedianPruner)"
    if not isinstance(cfg, DictConfig | dict) or "_target_" not in cfg:
        raise ConfigError("hydra.sweeper.pruner", _plain(cfg), allowed)
    try:
        pruner = instantiate(cfg)
    except Exception as err:  # noqa: BLE001 - any failure is the same user error
        raise ConfigError("hydra.sweeper.pruner", _plain(cfg), allowed, f"cannot build it ({err})") from None
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError("hydra.sweeper.pruner", _plain(cfg), allowed, f"it built a {type(pruner).__name__}")
    return pruner


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def current_sweep_trial() -> SweepTrial | None:
    """The sweep trial of the current Hydra job, or ``None`` outside a sweep (no Hydra, or no trial keys)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().get("sweeper") or {}
    keys = {key: sweeper.get(key) for key in ("storage", "study_name", "trial")}
    if any(value is None for value in keys.values()):
        return None
    number = keys["trial"]
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ConfigError("hydra.sweeper.trial", number, "a trial number (an integer >= 0)")
    return SweepTrial(str(keys["storage"]), str(keys["study_name"]), number, sweeper.get("pruner"))


def attach_trial() -> optuna.trial.Trial | None:
    """The Optuna trial this job runs, from the Hydra config; ``None`` outside a sweep or when pruning is impossible."""
    sweep = current_sweep_trial()
    return sweep.attach() if sweep is not None else None


class OptunaPruning(Callback):
    """Report the objective to an Optuna trial after each validation; stop training when it should be pruned.

    Values are reported at ``step = trainer.global_step`` (optimizer steps), so a pruner compares trials
    after the same number of steps. Under DDP only rank 0 talks to the storage and its decision is
    broadcast, so all ranks stop together. After a prune, :attr:`pruned` is true and :attr:`last_value` /
    :attr:`last_step` hold the last value reported.

    Args:
        trial: the running trial (see :func:`attach_trial`); only used on rank 0.
        metric: name of the logged metric to report, e.g. ``"val/acc"``.
        direction: ``"minimize"`` or ``"maximize"``; must agree with the study's direction.
    """

    def __init__(self, trial: optuna.trial.Trial | None, metric: str, direction: str) -> None:
        self.trial = trial
        self.metric = metric
        self.direction = check_direction(direction)
        self.pruned = False
        self.last_value: float | None = None
        self.last_step: int | None = None
        if trial is not None:
            study_direction = trial.study.direction.name.lower()
            if study_direction != direction:
                # a pruner ranking trials the other way would stop the best runs
                raise ConfigError(
                    "objective.direction", direction, f"{study_direction} (the direction of the sweep's study)",
                    "the run and the sweep optimize in opposite directions",
                )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.metric)
            # a non-finite objective is a divergence, reported as such by the run tracker, not a prune
            if value is not None and math.isfinite(float(value)):
                self.last_value, self.last_step = float(value), trainer.global_step
                self.trial.report(self.last_value, step=self.last_step)
                prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned = True
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info("trial %d pruned at step %d (%s = %s)", self.trial.number, self.last_step, self.metric,
                         self.last_value)
