"""One training run from a composed config, in four steps: check, build, fit, conclude (``results.json``).

``train.py`` and ``python -m lightopt.train`` call :func:`run`; tests call it with a composed config. The
config checks live in :mod:`lightopt.run.settings`, the LightningModule in :mod:`lightopt.run.module`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from lightopt.checks import writable_dir
from lightopt.cli import EXIT_SIGINT, EXIT_SIGTERM
from lightopt.contract import RESULTS_FILE, RunResult, TrialContext
from lightopt.core.averaging import Averaging
from lightopt.cores import available_cores
from lightopt.errors import ConfigError
from lightopt.formatting import error_text, fmt
from lightopt.objective import worst_value
from lightopt.run import console, folds, speed, task, tracking, tune
from lightopt.run.batch_size import BatchSizeResult, find_batch_size
from lightopt.run.checkpoints import LAST_CHECKPOINT, check_written, last_path, save_last
from lightopt.run.clock import StepClock
from lightopt.run.module import LitModel
from lightopt.run.pruning import OptunaPruning
from lightopt.run.ranks import RankLaunch, trial_ranks_in_job_dir
from lightopt.run.settings import RunSettings, check_config, check_resumable, lr_scale_factor, required_metrics
from lightopt.run.tracker import RunTracker

log = logging.getLogger(__name__)

@dataclass
class BuiltRun:
    """Everything :func:`build` made for one run, and what fitting it found."""

    cfg: DictConfig
    settings: RunSettings
    out_dir: Path
    datamodule: L.LightningDataModule
    model: torch.nn.Module
    loss: torch.nn.Module
    task: str
    tracker: RunTracker
    pruning: OptunaPruning | None
    loggers: list[Any]
    summary: list[console.RunSummary]
    trainer: L.Trainer
    optimizer_cfg: DictConfig
    lr: float | None
    module: LitModel | None = None
    found: tune.LRFindResult | None = None
    batch_found: BatchSizeResult | None = None
    status: str = "completed"
    failure: BaseException | None = field(default=None, repr=False)

    def make_module(self) -> LitModel:
        """The LightningModule around the run's network, with the current optimizer config (again after lr_find)."""
        cfg = self.cfg
        self.module = LitModel(
            self.model, self.loss, optimizer=self.optimizer_cfg, schedule=cfg.schedule,
            regularization=cfg.regularization, lr_multipliers=cfg.get("lr_multipliers"), task=self.task,
            num_classes=getattr(self.datamodule, "num_outputs", None) if self.task == "classification" else None,
            seed=cfg.get("seed"), lr_layer_decay=cfg.get("lr_layer_decay"),
        )
        return self.module


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Train once and return the objective value (the worst value for its direction if it diverged).

    Writes ``results.json``, checkpoints and logs into ``output_dir`` (default: Hydra's run directory).
    Raises :class:`ConfigError` for bad configuration before training; other errors are recorded as
    ``status: failed`` in ``results.json`` and re-raised. A sweep trial (a ``trial.json`` in the run
    directory) reports to its trial after each validation and may end early with ``status: pruned``.
    """
    start = time.perf_counter()
    _lightning_logs_once()
    out_dir = _fresh_output_dir(output_dir)
    cfg = task.resolve(cfg)  # objective and loss from the data's task where the config leaves them open
    settings = check_config(cfg, TrialContext.read(out_dir))
    # Lightning's "`Trainer.fit` stopped" where lightopt prints its own line: a sweep's per trial, a cv's per fold
    console.quiet_libraries(in_sweep=settings.trial is not None or settings.cv is not None)
    if settings.cv is not None:
        result, failure = cross_validate(cfg, settings, out_dir, start)
    else:
        built = build(cfg, settings, out_dir)
        fit(built)
        result, failure = conclude(built, time.perf_counter() - start), built.failure
    if failure is not None:
        raise failure
    return float(result.value)


def cross_validate(cfg: DictConfig, settings: RunSettings, out_dir: Path,
                   start: float) -> tuple[RunResult, BaseException | None]:
    """``cv=kfold``: a fresh run per fold in ``<run dir>/fold-<i>`` (same seed, so the same initial weights), one
    after another and under DDP on all ranks; the run's ``results.json`` holds the folds' mean. A sweep trial
    reports the running mean after each fold, so that a pruner can stop it after its first poor folds."""
    cv, results, dirs = settings.cv, [], []
    reports = None if settings.trial is None else OptunaPruning(
        settings.objective, settings.direction, context=settings.trial, mode_key="objective.direction")
    status, failure, built = "completed", None, None
    with trial_ranks_in_job_dir(settings.trial) as launch:
        for fold in range(cv.folds):
            fold_start = time.perf_counter()
            fold_dir = writable_dir("output_dir", out_dir / folds.fold_dir_name(fold))
            built = build(cfg, settings, fold_dir, fold=fold)
            fit(built, launch)
            result = conclude(built, time.perf_counter() - fold_start, show=False)
            results.append(result)
            dirs.append(str(built.out_dir))
            running_mean = statistics.fmean(r.value for r in results)
            if built.trainer.is_global_zero:  # in a sweep, its line per trial says it
                (log.info if settings.trial is None else log.debug)(
                    "fold %d of %d: %s = %s (%s), mean so far %s", fold + 1, cv.folds, settings.objective,
                    fmt(result.value, 6), result.status, fmt(running_mean, 6))
            if result.status != "completed":
                status, failure = result.status, built.failure
                break
            if reports is not None and reports.report(built.trainer, running_mean, fold + 1, unit="fold"):
                status = "pruned"
                break
    return _conclude_folds(built, results, dirs, status, failure, time.perf_counter() - start), failure


def _conclude_folds(built: BuiltRun, results: list[RunResult], dirs: list[str], status: str,
                    failure: BaseException | None, seconds: float) -> RunResult:
    """The cross-validated run's :class:`RunResult` from its folds' (written and shown on rank 0)."""
    settings = built.settings
    summary = folds.summarize(settings.cv.folds, [r.value for r in results if r.status == "completed"], dirs)
    value = summary.mean if status in ("completed", "pruned") else worst_value(settings.direction)
    lrs = {r.lr for r in results}
    result = RunResult(
        objective=settings.objective, value=value, direction=settings.direction, status=status,
        metrics=folds.mean_metrics([r.metrics for r in results if r.status == "completed"]),
        global_step=sum(r.global_step or 0 for r in results), epochs=sum(r.epochs or 0 for r in results),
        wall_seconds=round(seconds, 3), step_seconds=round(sum(r.step_seconds or 0.0 for r in results), 3),
        trial=None if settings.trial is None else settings.trial.number, lr=lrs.pop() if len(lrs) == 1 else None,
        error=None if failure is None else error_text(failure),
        cv=summary.as_dict(),
    )
    if built.trainer.is_global_zero:
        path = result.write(built.out_dir.parent)
        (log.info if settings.trial is None else log.debug)(
            "%s = %s ± %s over %d folds (%s); results in %s", settings.objective, fmt(summary.mean, 6),
            fmt(summary.std, 6), len(summary.values), status, path)
        if settings.console.summary:
            console.show_results(result.to_dict(), built.out_dir.parent)
    else:
        log.info("rank %d: %s = %s over %d folds (%s)", built.trainer.global_rank, settings.objective, value,
                 len(summary.values), status)
    return result


def build(cfg: DictConfig, settings: RunSettings, out_dir: Path, fold: int | None = None) -> BuiltRun:
    """Seed, then build data, model, loss, callbacks, loggers and trainer, and scale the lr for the global batch.

    ``fold``: the cross-validation fold (0-based) the run trains on, in ``out_dir`` of its own.
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = configured("data", cfg.data)
    if fold is not None:
        folds.use_fold(datamodule, settings.cv, fold, getattr(datamodule, "task", None))
    model = build_model(cfg, datamodule)
    loss = configured("loss", cfg.loss)
    if isinstance(loss, torch.nn.CrossEntropyLoss) and getattr(datamodule, "num_outputs", None) == 1:
        raise ConfigError("loss", cfg.loss.get("_target_"), "loss=mse or loss=huber for one output (a regression "
                          "target), or data with classes", "cross-entropy over a single output is always 0")
    tracker = RunTracker(settings.objective, settings.direction, required=required_metrics(cfg))
    pruning = None
    if settings.trial is not None and fold is None:  # a cross-validation's trial reports after each fold instead
        pruning = OptunaPruning(settings.objective, settings.direction, context=settings.trial,
                                mode_key="objective.direction")
    loggers = _loggers(cfg, out_dir, settings.resumed_run_id, fold)
    shown = settings.console
    # before the bar: printed above it; of a cross-validation, the first fold's
    summary = [console.RunSummary(cfg, out_dir)] if shown.summary and fold in (None, 0) else []
    trainer_kwargs: dict[str, Any] = {
        "callbacks": _callbacks(cfg, settings, out_dir, tracker, pruning) + tracking.callbacks(loggers) + summary
        + console.progress_bar_callbacks(shown),
        "enable_progress_bar": shown.progress_bar != "none",
        "logger": loggers or False,
        "default_root_dir": str(out_dir),
    }
    if not cfg.checkpoint.get("enabled", True):
        trainer_kwargs["enable_checkpointing"] = False
    elif (out_dir / "checkpoints").exists():  # (else made in out_dir, checked writable) Lightning does not report
        # a checkpoint it could not write: it swallows the PermissionError
        writable_dir("checkpoint", out_dir / "checkpoints", "a writable <run dir>/checkpoints, or "
                     "checkpoint.enabled=false")
    trainer_cfg = speed.configure(cfg.trainer, model)  # precision: auto, tf32, compile (lightopt/run/speed.py)
    # partial: Hydra would try to turn the callback objects into config nodes
    trainer: L.Trainer = configured("trainer", trainer_cfg, _partial_=True)
    try:
        trainer = trainer(**trainer_kwargs)
    except (ValueError, TypeError, MisconfigurationException) as err:  # e.g. precision=bogus, no GPU for gpu
        shown = {k: trainer_cfg[k] for k in ("accelerator", "devices", "strategy", "precision") if k in trainer_cfg}
        raise ConfigError("trainer", shown, "settings lightning.Trainer accepts on this machine",
                          str(err).strip().splitlines()[0]) from None
    if trainer.global_rank > 0:
        console.logs_to_files_only()
    _set_threads(cfg, settings, trainer, summary)
    # after the trainer: the global batch needs its resolved device count and gradient accumulation
    optimizer_cfg, lr = _scaled_optimizer_cfg(cfg, settings, trainer)
    return BuiltRun(cfg, settings, out_dir, datamodule, model, loss, _task(datamodule, loss), tracker, pruning,
                    loggers, summary, trainer, optimizer_cfg, lr)


def fit(built: BuiltRun, launch: RankLaunch | None = None) -> None:
    """Run the lr finder when asked, then train; the outcome is left in ``built.status`` and ``built.failure``.

    ``launch``: the DDP ranks a sweep trial started for an earlier fit of the same run (a cross-validation's).
    """
    cfg, trainer, settings = built.cfg, built.trainer, built.settings
    module = built.make_module()
    if settings.resumed is not None:
        check_resumable(cfg.ckpt_path, settings.resumed, module)
    if trainer.is_global_zero:
        tracking.log_config(built.loggers, OmegaConf.to_container(cfg, resolve=True))
    checkpoints = built.out_dir / "checkpoints" if cfg.checkpoint.get("enabled", True) else None
    # DDP ranks of a sweep trial run that trial (a cross-validation's folds share the ranks of its first)
    ranks = trial_ranks_in_job_dir(settings.trial) if launch is None else contextlib.nullcontext(launch)
    try:
        with ranks as launch:
            launch.trainer = launch.trainer or trainer
            with console.lightning_info_off():
                if settings.batch_size is not None:  # first: the lr finder measures at the batch size found
                    module = _find_batch_size(built, module)
                if settings.tune is not None:
                    module = _find_lr(built, module)
            with speed.threads_for_ranks(torch.get_num_threads(), trainer.world_size > 1):
                trainer.fit(module, datamodule=built.datamodule, ckpt_path=cfg.get("ckpt_path"))
            # the exact final state (a run stopped by max_steps or a pruner ends between epoch checkpoints);
            # inside the block: under DDP every rank takes part, while the trial's ranks still run
            if checkpoints is not None:
                save_last(trainer, checkpoints)
                check_written(trainer, checkpoints)
    except ConfigError as err:
        raise err if built.found is None else tune.in_context(err, built.found) from None
    except Exception as err:  # noqa: BLE001 - recorded by conclude, then re-raised by run
        built.status, built.failure = "failed", err
        return
    except (KeyboardInterrupt, SystemExit) as err:
        code = _interruption_exit_code(trainer, err)
        if code is None:  # a task's own sys.exit: not ours to judge
            raise
        built.status, built.failure = "interrupted", SystemExit(code)
        if checkpoints is not None:
            save_last(trainer, checkpoints)  # resumable at the step it reached
        return
    if module.diverged or built.tracker.nonfinite_objective:
        built.status = "diverged"
    elif trainer.interrupted:
        built.status = "interrupted"
    elif built.pruning is not None and built.pruning.pruned:
        built.status = "pruned"
    elif built.tracker.objective_value(settings.reduce) is None:  # a sampler must not learn from a made-up value
        built.status = "failed"
        built.failure = RuntimeError(
            f"no validation before training ended at step {trainer.global_step}: {settings.objective} has no "
            "value (validation runs at the end of each epoch, or every trainer.val_check_interval batches)")


def _interruption_exit_code(trainer: L.Trainer, err: BaseException) -> int | None:
    """143 for SIGTERM, 130 for Ctrl-C (Lightning turns both into a SystemExit), None for anything else."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, SIGTERMException) or trainer.received_sigterm:
        return EXIT_SIGTERM
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return EXIT_SIGINT
    return None


def _find_batch_size(built: BuiltRun, module: LitModel) -> LitModel:
    """``tune=batch_size``: Lightning's finder sets ``data.batch_size``; ``lr_scaling`` then scales the lr for it.
    The finder trains the module it is given, so a fresh one (same restored network) is built."""
    built.batch_found = find_batch_size(built.trainer, module, built.datamodule, built.settings.batch_size)
    built.optimizer_cfg, built.lr = _scaled_optimizer_cfg(built.cfg, built.settings, built.trainer,
                                                          built.batch_found.found)
    return built.make_module()


def _find_lr(built: BuiltRun, module: LitModel) -> LitModel:
    """``tune=lr_find``: the range test trains the module it is given, so a fresh one (same restored network)
    is built with the suggestion as lr0."""
    trainer = built.trainer
    found = tune.find_lr(trainer, module, built.datamodule, built.settings.tune, built.out_dir,
                         configured_lr=built.lr, quiet=built.settings.console.progress_bar == "none")
    built.found, built.lr = found, found.suggestion
    built.optimizer_cfg = tune.with_lr(built.optimizer_cfg, found.suggestion)
    for callback in built.summary:
        callback.lr_find = found.as_dict()
    if trainer.is_global_zero:
        tune.log_result(built.loggers, found)
    return built.make_module()


def conclude(built: BuiltRun, seconds: float, show: bool = True) -> RunResult:
    """The run's :class:`RunResult`: written, shown (unless not ``show``: a fold's) and handed to the loggers on
    rank 0; logged on the others."""
    settings, trainer, status = built.settings, built.trainer, built.status
    value = built.tracker.objective_value(settings.reduce)
    if status == "pruned" and built.pruning is not None and built.pruning.last_value is not None:
        value = built.pruning.last_value  # what the pruner judged the trial by
    if value is None or status in ("diverged", "failed"):
        value = worst_value(settings.direction)
    result = RunResult(
        objective=settings.objective, value=value, direction=settings.direction, status=status,
        metrics=built.tracker.metrics_dict(), global_step=trainer.global_step, epochs=trainer.current_epoch,
        wall_seconds=round(seconds, 3), trial=None if settings.trial is None else settings.trial.number,
        lr=built.lr, lr_find=None if built.found is None else built.found.as_dict(),
        best_checkpoint=next((c.best_model_path for c in trainer.checkpoint_callbacks
                              if c.monitor is not None and c.best_model_path and Path(c.best_model_path).is_file()),
                             None),
        error=None if built.failure is None else error_text(built.failure),
        step_seconds=next((round(cb.seconds, 3) for cb in trainer.callbacks if isinstance(cb, StepClock)), None),
        averaging=next((cb.summary() for cb in trainer.callbacks if isinstance(cb, Averaging)), None),
        batch_size_find=None if built.batch_found is None else built.batch_found.as_dict(),
    )
    if trainer.is_global_zero:
        path = result.write(built.out_dir)
        # in a sweep trial the sweep's own line says it
        (log.info if settings.trial is None and show else log.debug)("%s = %s (%s); results in %s",
                                                                     settings.objective, value, status, path)
        if settings.console.summary and show:
            console.show_results(result.to_dict(), built.out_dir)
        exit_code = built.failure.code if isinstance(built.failure, SystemExit) else 0
        if status == "interrupted":
            last = last_path(built.out_dir / "checkpoints")
            log.info("interrupted at step %d; resume with: ckpt_path=%s", trainer.global_step, last)
        tracking.finish(built.loggers, {"objective": settings.objective, "objective_value": value,
                                        "status": status, "global_step": trainer.global_step}, exit_code=exit_code)
    else:  # the other DDP ranks write nothing but their log line, by which they can be checked
        log.info("rank %d: %s = %s (%s) at step %d, last lr %s", trainer.global_rank, settings.objective, value,
                 status, trainer.global_step, built.module.last_lr if built.module is not None else None)
    return result


# --- pieces of build ----------------------------------------------------------------------------------


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> torch.nn.Module:
    """Instantiate ``cfg.model``, filling ``in_features``/``out_features`` (and a language model's
    ``vocab_size``/``block_size``) left null from the data module; a model with ``check_data`` checks it."""
    filled: dict[str, Any] = {}
    for key, attr in (("in_features", "num_features"), ("out_features", "num_outputs"),
                      ("vocab_size", "vocab_size"), ("block_size", "block_size")):
        if key in cfg.model and cfg.model[key] is None:
            if getattr(datamodule, attr, None) is None:
                datamodule.prepare_data()
                datamodule.setup("fit")
            value = getattr(datamodule, attr, None)
            if value is None:
                raise ConfigError(f"model.{key}", None,
                                  f"a number, or a data module with a `{attr}` attribute to take it from")
            filled[key] = value
    model = configured("model", cfg.model, **filled)
    if callable(getattr(model, "check_data", None)):  # e.g. GPT: data vocab/block sizes fit the model
        model.check_data(datamodule)
    return model


def configured(key: str, section: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(section)``, a value its target refuses reported as a :class:`ConfigError` of ``key``
    (one line with the target's own reason) instead of Hydra's "Error in call to target" traceback."""
    try:
        return instantiate(section, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        if isinstance(cause, ConfigError):
            raise cause from None
        if not isinstance(cause, (ValueError, TypeError, KeyError, IndexError, RuntimeError)):
            raise
        reason = (f"{type(cause).__name__}: {cause}" if str(cause).strip() else type(cause).__name__).splitlines()[0]
        raise ConfigError(key, section.get("_target_"), f"arguments {section.get('_target_')} accepts",
                          reason) from None


def _task(datamodule: L.LightningDataModule, loss: torch.nn.Module) -> str:
    task = getattr(datamodule, "task", None)
    if task:
        return task
    return "classification" if isinstance(loss, torch.nn.CrossEntropyLoss | torch.nn.NLLLoss) else "regression"


def _loggers(cfg: DictConfig, out_dir: Path, resumed_run_id: str | None, fold: int | None) -> list[Any]:
    loggers = []
    for name, section in (cfg.get("logger") or {}).items():
        if section is None:
            continue
        extra: dict[str, Any] = {"save_dir": str(out_dir)}
        if section.get("_target_") == "lightopt.run.tracking.wandb_logger":
            if resumed_run_id and section.get("id") is None:  # a resumed run continues its checkpoint's W&B run
                extra["id"] = resumed_run_id
            if fold is not None:
                extra["fold"] = fold + 1
        try:
            loggers.append(instantiate(section, **extra))
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"logger.{name}", OmegaConf.to_container(section), "a Lightning logger config",
                              str(err)) from None
    return loggers


def _callbacks(cfg: DictConfig, settings: RunSettings, out_dir: Path, tracker: RunTracker,
               pruning: OptunaPruning | None) -> list[Callback]:
    mode = "max" if cfg.objective.direction == "maximize" else "min"
    callbacks: list[Callback] = [StepClock(), tracker] if pruning is None else [StepClock(), tracker, pruning]
    if settings.averaging is not None:  # before the checkpoints: they save the average, validation sees it
        callbacks.append(Averaging(settings.averaging))
    if cfg.checkpoint.get("enabled", True):
        callbacks.append(ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best-epoch{epoch:03d}",
                                         auto_insert_metric_name=False, monitor=cfg.objective.metric, mode=mode,
                                         save_top_k=1))
        # last.ckpt is the latest state after every epoch, whether or not the objective improved (Lightning's
        # save_last follows the monitored checkpoint); the end of training writes it once more (fit)
        callbacks.append(ModelCheckpoint(dirpath=out_dir / "checkpoints", filename=LAST_CHECKPOINT, monitor=None,
                                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False))
    if cfg.early_stopping.get("enabled", False):
        callbacks.append(EarlyStopping(monitor=cfg.objective.metric, mode=mode, patience=cfg.early_stopping.patience,
                                       min_delta=cfg.early_stopping.min_delta))
    return callbacks


def _scaled_optimizer_cfg(cfg: DictConfig, settings: RunSettings, trainer: L.Trainer,
                          batch_size: int | None = None) -> tuple[DictConfig, float | None]:
    """``cfg.optimizer`` with ``lr`` scaled by ``lr_scaling`` for this trainer's global batch (of ``batch_size`` per
    device, default ``data.batch_size``), and that lr."""
    rule, base_lr = settings.lr_scaling, settings.lr
    if rule == "none":
        return cfg.optimizer, base_lr
    batch_size = cfg.data.batch_size if batch_size is None else batch_size
    global_batch = batch_size * trainer.world_size * trainer.accumulate_grad_batches
    factor = lr_scale_factor(rule, batch_size, trainer.world_size, trainer.accumulate_grad_batches,
                             cfg.lr_scaling.base_batch_size)
    lr = base_lr * factor
    log.info("lr_scaling.rule=%s: lr %g x %g = %g for a global batch of %d", rule, base_lr, factor, lr, global_batch)
    return tune.with_lr(cfg.optimizer, lr), lr  # a resolved copy: the run's saved config keeps the user's lr


# --- the edges: output directory and logging ----------------------------------------------------------


def _set_threads(cfg: DictConfig, settings: RunSettings, trainer: L.Trainer,
                 summary: list[console.RunSummary]) -> None:
    """torch's CPU threads for this process (``trainer.threads``; :func:`lightopt.run.speed.choose_threads`)."""
    # a sweep with trials in flight gave each its share of the machine's cores
    cores = available_cores() if settings.trial is None or settings.trial.threads is None else settings.trial.threads
    threads, why = speed.choose_threads(cfg.trainer.get("threads", "auto"), cores=cores,
                                        processes=trainer.num_devices if trainer.world_size > 1 else 1,
                                        environment=os.environ.get(speed.THREADS_ENV))
    torch.set_num_threads(threads)
    for panel in summary:
        panel.threads = why


def _fresh_output_dir(output_dir: str | Path | None) -> Path:
    """The run directory (default: Hydra's), refused when it already holds a finished run."""
    out_dir = writable_dir("output_dir", Path(output_dir) if output_dir is not None else _hydra_output_dir())
    if (out_dir / RESULTS_FILE).exists():
        raise ConfigError("output_dir", str(out_dir), "a directory without results.json",
                          "it already holds a finished run; refusing to overwrite it")
    return out_dir


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _lightning_logs_once() -> None:
    """Let Lightning's messages reach the console once, through the root logger's handlers.

    Imported after Hydra configured logging, ``lightning`` keeps its own console handler and also
    propagates to the root, where Hydra prints them again (and writes them to the run's log file).
    """
    if logging.getLogger().handlers:
        lightning_log = logging.getLogger("lightning")
        for handler in list(lightning_log.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_log.removeHandler(handler)
