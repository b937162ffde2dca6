"""One training run from a composed config: build data, model, loss, trainer; fit; write ``results.json``.

``train.py`` at the top level is the Hydra entry point that calls :func:`run`; tests call :func:`run`
directly with a composed config. Config checks that need no data happen in :func:`check_config` before
anything is built; the rest (schedule horizon, logged metric names) fail before the first training step.
The learning rate is scaled with the global batch size here (``lr_scaling``, :func:`lr_scale_factor`),
and inside a sweep the run reports to its trial and may be pruned (:mod:`lightopt.pruning`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from lightopt import console, speed, tracking, tune
from lightopt.distributed import trial_ranks_in_job_dir
from lightopt.errors import ConfigError
from lightopt.module import LitModel
from lightopt.optimizers import create_optimizer
from lightopt.pruning import OptunaPruning, current_sweep_trial
from lightopt.results import RunTracker, check_direction, worst_value, write_results

log = logging.getLogger(__name__)


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

STATUSES = ("completed", "pruned", "diverged", "failed", "interrupted")
LR_SCALING_RULES = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}  # rule -> exponent of the batch-size ratio


def _import_target(section: str, cfg: DictConfig) -> None:
    target = cfg.get("_target_")
    if target is None:
        raise ConfigError(f"{section}._target_", None, "a dotted path to a class or function", "missing")
    try:
        from hydra._internal.utils import _locate

        _locate(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the same user error
        raise ConfigError(
            f"{section}._target_", target, "an importable dotted path", f"cannot import it ({err})"
        ) from None


def check_config(cfg: DictConfig) -> None:
    """Reject config values that need no data or model to judge, before anything is built."""
    check_direction(cfg.objective.direction)
    if cfg.objective.get("reduce", "best") not in ("best", "final"):
        raise ConfigError("objective.reduce", cfg.objective.reduce, "best | final")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError("seed", seed, "a non-negative integer, or null for no seeding")
    for section in ("data", "model", "loss", "trainer"):
        _import_target(section, cfg[section])
    check_lr_scaling(cfg)
    tune.check_tune(cfg)
    console.settings(cfg)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_lr_scaling(cfg: DictConfig) -> str:
    """Validate ``lr_scaling`` and return its rule (``"none"`` when the section is absent or null)."""
    scaling = cfg.get("lr_scaling") or {}
    rule = scaling.get("rule", "none")
    rule = "none" if rule is None else rule
    if rule not in LR_SCALING_RULES:
        raise ConfigError("lr_scaling.rule", rule, " | ".join(LR_SCALING_RULES))
    if rule == "none":
        return rule
    base = scaling.get("base_batch_size")
    if not _positive_int(base):
        raise ConfigError("lr_scaling.base_batch_size", base,
                          "an integer > 0: the global batch size optimizer.lr is meant for")
    batch_size = cfg.data.get("batch_size")
    if not _positive_int(batch_size):
        raise ConfigError("data.batch_size", batch_size, "an integer > 0 (the per-device batch size)",
                          f"lr_scaling.rule={rule} scales the learning rate with it")
    return rule


def lr_scale_factor(rule: str, batch_size: int, world_size: int, accumulate: int, base_batch_size: int) -> float:
    """Factor on ``optimizer.lr`` for the global batch ``batch_size * world_size * accumulate``.

    ``linear``: B / base (Goyal et al., for SGD); ``sqrt``: sqrt(B / base) (keeps the gradient-noise
    scale, common for Adam); ``none``: 1.
    """
    global_batch = batch_size * world_size * accumulate
    return (global_batch / base_batch_size) ** LR_SCALING_RULES[rule]


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
                raise ConfigError(
                    f"model.{key}", None,
                    f"a number, or a data module with a `{attr}` attribute to take it from",
                )
            filled[key] = value
    model = instantiate(cfg.model, **filled)
    if callable(getattr(model, "check_data", None)):  # e.g. GPT: data vocab/block sizes fit the model
        model.check_data(datamodule)
    return model


def _task(datamodule: L.LightningDataModule, loss: torch.nn.Module) -> str:
    task = getattr(datamodule, "task", None)
    if task:
        return task
    return "classification" if isinstance(loss, torch.nn.CrossEntropyLoss | torch.nn.NLLLoss) else "regression"


def _loggers(cfg: DictConfig, out_dir: Path) -> list[Any]:
    loggers = []
    for name, section in (cfg.get("logger") or {}).items():
        if section is None:
            continue
        extra: dict[str, Any] = {"save_dir": str(out_dir)}
        if section.get("_target_") == "lightopt.tracking.wandb_logger" and section.get("id") is None:
            # a resumed run continues the W&B run its checkpoint came from
            if run_id := tracking.previous_run_id(cfg.get("ckpt_path")):
                extra["id"] = run_id
        try:
            loggers.append(instantiate(section, **extra))
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"logger.{name}", OmegaConf.to_container(section), "a Lightning logger config",
                              str(err)) from None
    return loggers


def _callbacks(cfg: DictConfig, out_dir: Path, tracker: RunTracker, pruning: OptunaPruning | None) -> list[Callback]:
    mode = "max" if cfg.objective.direction == "maximize" else "min"
    callbacks: list[Callback] = [tracker] if pruning is None else [tracker, pruning]
    if cfg.checkpoint.get("enabled", True):
        callbacks.append(
            ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename="best-epoch{epoch:03d}",
                auto_insert_metric_name=False,
                monitor=cfg.objective.metric,
                mode=mode,
                save_top_k=1,
                save_last=True,
            )
        )
    if cfg.early_stopping.get("enabled", False):
        callbacks.append(
            EarlyStopping(
                monitor=cfg.objective.metric,
                mode=mode,
                patience=cfg.early_stopping.patience,
                min_delta=cfg.early_stopping.min_delta,
            )
        )
    return callbacks


def _scaled_optimizer_cfg(
    cfg: DictConfig, base_lr: float | None, trainer: L.Trainer
) -> tuple[DictConfig, float | None]:
    """``cfg.optimizer`` with ``lr`` scaled by ``lr_scaling`` for this trainer's global batch, and that lr."""
    rule = check_lr_scaling(cfg)
    if rule == "none":
        return cfg.optimizer, base_lr
    if base_lr is None:
        raise ConfigError("optimizer.lr", None, "a number > 0",
                          f"lr_scaling.rule={rule} needs a learning rate to scale")
    factor = lr_scale_factor(rule, cfg.data.batch_size, trainer.world_size, trainer.accumulate_grad_batches,
                             cfg.lr_scaling.base_batch_size)
    lr = base_lr * factor
    # a resolved copy: the run's config (as saved in .hydra/) keeps the lr the user gave
    optimizer_cfg = OmegaConf.create(OmegaConf.to_container(cfg.optimizer, resolve=True))
    optimizer_cfg.lr = lr
    log.info("lr_scaling.rule=%s: lr %g x %g = %g for a global batch of %d", rule, base_lr, factor, lr,
             cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches)
    return optimizer_cfg, lr


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Train once and return the objective value (the worst value for its direction if it diverged).

    Writes ``results.json``, checkpoints and logs into ``output_dir`` (default: Hydra's run directory).
    Raises :class:`ConfigError` for bad configuration before training; other errors are recorded as
    ``status: failed`` in ``results.json`` and re-raised. Inside a sweep (``hydra.sweeper.trial`` set),
    the objective is reported to the trial after each validation and a pruned run ends early with
    ``status: pruned`` and the last reported value.
    """
    start = time.perf_counter()
    _lightning_logs_once()
    out_dir = Path(output_dir) if output_dir is not None else _hydra_output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    if results_path.exists():
        raise ConfigError("output_dir", str(out_dir), "a directory without results.json",
                          "it already holds a finished run; refusing to overwrite it")
    check_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule)
    loss = instantiate(cfg.loss)
    task = _task(datamodule, loss)
    # Build the optimizer once on the CPU model, so lr, _target_ and group mistakes stop the run here.
    optimizer = create_optimizer(model, cfg.optimizer, regularization=cfg.regularization,
                                 lr_multipliers=cfg.get("lr_multipliers"))
    base_lr = optimizer.defaults.get("lr")
    required = {}
    if cfg.schedule.get("monitor"):
        required["schedule.monitor"] = cfg.schedule.monitor
    tracker = RunTracker(cfg.objective.metric, cfg.objective.direction, required=required)
    sweep = current_sweep_trial()
    trial = sweep.attach() if sweep is not None else None
    pruning = OptunaPruning(trial, cfg.objective.metric, cfg.objective.direction) if trial is not None else None
    loggers = _loggers(cfg, out_dir)
    tune_settings = tune.check_tune(cfg)  # None unless tune=lr_find
    shown = console.settings(cfg, in_sweep=sweep is not None)
    summary = [console.RunSummary(cfg, out_dir)] if shown.summary else []  # before the bar: printed above it
    trainer_kwargs: dict[str, Any] = {
        "callbacks": _callbacks(cfg, out_dir, tracker, pruning) + tracking.callbacks(loggers) + summary
        + console.progress_bar_callbacks(shown),
        "enable_progress_bar": shown.progress_bar != "none",
        "logger": loggers or False,
        "default_root_dir": str(out_dir),
    }
    if not cfg.checkpoint.get("enabled", True):
        trainer_kwargs["enable_checkpointing"] = False
    # partial: Hydra would try to turn the callback objects into config nodes
    trainer_cfg = speed.configure(cfg.trainer, model)  # precision: auto, tf32, compile (lightopt/speed.py)
    trainer: L.Trainer = instantiate(trainer_cfg, _partial_=True)(**trainer_kwargs)
    # after the trainer: the global batch needs its resolved device count and gradient accumulation
    optimizer_cfg, lr = _scaled_optimizer_cfg(cfg, base_lr, trainer)

    def make_module(optimizer_cfg: DictConfig) -> LitModel:  # again after tune=lr_find, around the same network
        return LitModel(
            model,
            loss,
            optimizer=optimizer_cfg,
            schedule=cfg.schedule,
            regularization=cfg.regularization,
            lr_multipliers=cfg.get("lr_multipliers"),
            task=task,
            num_classes=getattr(datamodule, "num_outputs", None) if task == "classification" else None,
            seed=cfg.get("seed"),
        )

    module = make_module(optimizer_cfg)
    found: tune.LRFindResult | None = None

    if trainer.is_global_zero:
        tracking.log_config(loggers, OmegaConf.to_container(cfg, resolve=True))
    status, failure = "completed", None
    try:
        with trial_ranks_in_job_dir(trainer):  # DDP ranks of a sweep trial run that trial, in its directory
            if tune_settings is not None:
                # the range test trains the module it is given: train a fresh one (same restored network)
                # whose optimizer and schedule are built with the suggestion as lr0
                found = tune.find_lr(trainer, module, datamodule, tune_settings, out_dir, configured_lr=lr,
                                     quiet=shown.progress_bar == "none")
                optimizer_cfg, lr = tune.with_lr(optimizer_cfg, found.suggestion), found.suggestion
                module = make_module(optimizer_cfg)
                for callback in summary:
                    callback.lr_find = found.as_dict()
                if trainer.is_global_zero:
                    tune.log_result(loggers, found)
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except ConfigError as err:
        raise err if found is None else tune.in_context(err, found) from None
    except Exception as err:  # noqa: BLE001 - recorded, then re-raised below
        status, failure = "failed", err
    if status == "completed":
        if module.diverged or tracker.nonfinite_objective:
            status = "diverged"
        elif trainer.interrupted:
            status = "interrupted"
        elif pruning is not None and pruning.pruned:
            status = "pruned"

    direction = cfg.objective.direction
    value = tracker.objective_value(cfg.objective.get("reduce", "best"))
    if status == "pruned" and pruning is not None and pruning.last_value is not None:
        value = pruning.last_value  # what the pruner judged the trial by
    if status != "completed" or value is None or not math.isfinite(value):
        value = worst_value(direction) if status in ("diverged", "failed") or value is None else value
    if trainer.is_global_zero:
        best_ckpt = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path), None)
        write_results(
            results_path,
            {
                "objective": cfg.objective.metric,
                "value": value,
                "direction": direction,
                "status": status,
                "trial": None if sweep is None else sweep.number,
                "lr": lr,
                "lr_find": None if found is None else found.as_dict(),
                "metrics": tracker.metrics_dict(),
                "global_step": trainer.global_step,
                "epochs": trainer.current_epoch,
                "wall_seconds": round(time.perf_counter() - start, 3),
                "best_checkpoint": best_ckpt,
                "error": None if failure is None else f"{type(failure).__name__}: {failure}",
            },
        )
        log.info("%s = %s (%s); results in %s", cfg.objective.metric, value, status, results_path)
        if shown.summary:
            console.show_results(results_path)
        tracking.finish(loggers, {"objective": cfg.objective.metric, "objective_value": value,
                                  "status": status, "global_step": trainer.global_step})
    else:  # the other DDP ranks write nothing but their log line, by which they can be checked
        log.info("rank %d: %s = %s (%s) at step %d, last lr %s", trainer.global_rank, cfg.objective.metric, value,
                 status, trainer.global_step, module.last_lr)
    if failure is not None:
        raise failure
    return float(value)


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()
