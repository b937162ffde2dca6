"""A sweep trial's side of pruning: :class:`OptunaPruning`, the Lightning callback that reports a metric to the
job's Optuna trial after each validation and stops training when the study's pruner says so.

The job finds its trial through the :class:`~lightopt.contract.TrialContext` the sweeper left in its run
directory, and talks to the study through the storage alone, so it works in a process of its own. Outside
a lightopt sweep the callback does nothing. How the sweeper judges a pruned trial lives in the search.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from lightopt.contract import RunResult, TrialContext
from lightopt.errors import ConfigError
from lightopt.run.tracker import step_of_validation

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

_NO_PRUNER = (None, "none", "null", "")
_MODES = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}
_FROM_CONTEXT = object()  # OptunaPruning's default: the trial of the running sweep job


def build_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    """Instantiate the sweep's pruner config: ``null``/``none`` gives a pruner that never prunes."""
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


def attach(context: TrialContext) -> optuna.trial.Trial | None:
    """A handle on the context's running trial, or None for a multi-objective study (Optuna cannot prune those)."""
    import optuna

    from lightopt.storage import open_storage, with_password

    # The job samples nothing (its parameters arrive as overrides): a random sampler avoids building a
    # model-based sampler just to attach to the trial.
    storage = open_storage(with_password(context.storage), existing=True)
    study = optuna.load_study(study_name=context.study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(), pruner=build_pruner(context.pruner))
    if len(study.directions) > 1:
        log.info("study %r has %d objectives: trials are not pruned", context.study_name, len(study.directions))
        return None
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, context.number)
    except KeyError:
        raise ConfigError("trial.json: number", context.number, f"the number of a trial of study "
                          f"{context.study_name!r}", "the study has no such trial") from None
    return optuna.trial.Trial(study, trial_id)


class OptunaPruning(Callback):
    """Report ``monitor`` to this job's Optuna trial after each validation; stop training when it should be pruned.

    Values are reported at the step of the validation (:func:`lightopt.run.tracker.step_of_validation`: the
    0-based index of the last optimizer step, as in metrics.csv), so a pruner compares trials
    after the same number of steps. Under DDP only rank 0 talks to the storage and its decision is
    broadcast, so all ranks stop together. After a prune, :attr:`pruned` is true, :attr:`last_value` /
    :attr:`last_step` hold the last value reported, and the job's ``results.json`` says ``pruned`` (whatever
    the task function does next, the sweeper records the trial as PRUNED).

    Args:
        monitor: the logged metric to report, e.g. ``"val/acc"``.
        mode: ``"min"`` or ``"max"`` (or ``"minimize"``/``"maximize"``); must agree with the study's direction.
        context: the sweep trial to report to; by default that of the running Hydra job (read when training
            starts; none outside a lightopt sweep).
        trial: an Optuna trial to report to instead (then nothing is read from the job's directory).
        mode_key: the config key named when ``mode`` disagrees with the study.
    """

    def __init__(self, monitor: str, mode: str = "min", *, context: Any = _FROM_CONTEXT, trial: Any = None,
                 mode_key: str = "OptunaPruning.mode") -> None:
        if mode not in _MODES:
            raise ConfigError(mode_key, mode, "min | max (or minimize | maximize)")
        self.monitor, self.direction, self.mode_key = monitor, _MODES[mode], mode_key
        self.context: TrialContext | None = None if context is _FROM_CONTEXT else context
        self._find_trial = trial is None and (context is _FROM_CONTEXT or context is not None)
        self.trial = trial
        self.pruned = False
        self.last_value: float | None = None
        self.last_step: int | None = None
        if self.trial is not None:
            self._check_direction()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._attach()

    def _attach(self) -> None:
        if not self._find_trial:
            return
        self._find_trial = False
        if self.context is None:
            self.context = TrialContext.current()
        self.trial = attach(self.context) if self.context is not None else None
        if self.trial is not None:
            self._check_direction()

    def _check_direction(self) -> None:
        study_direction = self.trial.study.direction.name.lower()
        if study_direction != self.direction:
            # a pruner ranking trials the other way would stop the best runs
            raise ConfigError(self.mode_key, self.direction, f"{study_direction} (the direction of the sweep's "
                              "study)", "the run and the sweep optimize in opposite directions")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        self.report(trainer, None if value is None else float(value), step_of_validation(trainer))

    def report(self, trainer: L.Trainer, value: float | None, step: int, unit: str = "step") -> bool:
        """Report ``value`` at ``step`` to the trial (on rank 0) and stop ``trainer`` when the pruner says so (on
        every rank); whether it did. ``unit`` names the steps in the log (a cross-validation reports by fold)."""
        prune = False
        if trainer.is_global_zero:
            self._attach()
            # a non-finite objective is a divergence, reported as such by the run, not a prune
            if self.trial is not None and value is not None and math.isfinite(value):
                self.last_value, self.last_step = value, step
                self.trial.report(value, step=step)
                prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned = True
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info("trial %d pruned at %s %d (%s = %s)", self.trial.number, unit, self.last_step, self.monitor,
                         self.last_value)
                self._record_pruned()
        return prune

    def _record_pruned(self) -> None:
        """The job's result, for a task function that writes none itself (lightopt's run rewrites it at its end)."""
        if self.context is None or self.context.run_dir is None:
            return
        RunResult(self.monitor, float(self.last_value), self.direction, "pruned", global_step=self.last_step + 1,
                  trial=self.context.number).write(self.context.run_dir)
