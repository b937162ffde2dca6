"""Every check of a run's config that needs no data or model, done once, as :class:`RunSettings`.

Checks that need the built objects (the schedule's horizon, the names of logged metrics) happen when training
starts, before its first step. Building and fitting live in :mod:`lightopt.run.training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightopt.checks import integer, number, one_of
from lightopt.contract import TrialContext
from lightopt.core.averaging import AveragingSettings, check_averaging
from lightopt.core.optimizers import check_optimizer, create_optimizer
from lightopt.errors import ConfigError
from lightopt.run import console, folds, tracking, tune
from lightopt.run.batch_size import BatchSizeSettings, check_batch_size_finder
from lightopt.run.speed import choose_threads
from lightopt.run.task import loss_left_open, objective_of

LR_SCALING_RULES = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}  # rule -> exponent of the batch-size ratio


@dataclass(frozen=True)
class RunSettings:
    """What the config asks of a run, checked."""

    objective: str
    direction: str
    reduce: str  # best | final
    lr: float  # optimizer.lr as configured, or the class's default (before lr_scaling and lr_find)
    lr_scaling: str  # a key of LR_SCALING_RULES
    tune: tune.LRFindSettings | None
    console: console.ConsoleSettings
    trial: TrialContext | None  # the sweep trial this run is, or None
    resumed_run_id: str | None = None  # the W&B run id in ckpt_path's checkpoint, which a resume continues
    resumed: ResumeState | None = None  # what ckpt_path's checkpoint holds, to match against the built run
    cv: folds.CVSettings | None = None  # cv=kfold's settings, None without cross-validation
    batch_size: BatchSizeSettings | None = None  # tune=batch_size's settings, None without the finder
    averaging: AveragingSettings | None = None  # averaging=ema|swa's settings, None without averaging


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint to resume from must match in the run that is built: weights and optimizer state."""

    shapes: dict[str, tuple[int, ...]]  # weight name -> shape
    optimizer_groups: list[tuple[frozenset[str], int]]  # per param group: its hyperparameter names, its size

    @classmethod
    def of(cls, checkpoint: dict[str, Any]) -> ResumeState:
        return cls(shapes={k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")},
                   optimizer_groups=_group_summary(checkpoint["optimizer_states"][0]["param_groups"]))


def _group_summary(groups: list[dict[str, Any]]) -> list[tuple[frozenset[str], int]]:
    """Per optimizer param group: its hyperparameter names and its number of parameters."""
    return [(frozenset(g) - {"params"}, len(g["params"])) for g in groups]


def _import_target(section: str, cfg: DictConfig) -> None:
    from hydra.utils import get_object

    target = cfg.get("_target_")
    if target is None:
        raise ConfigError(f"{section}._target_", None, "a dotted path to a class or function", "missing")
    try:
        get_object(target)
    except Exception as err:  # noqa: BLE001 - any import failure is the same user error
        raise ConfigError(f"{section}._target_", target, "an importable dotted path",
                          f"cannot import it ({err})") from None


def check_lr_scaling(cfg: DictConfig) -> str:
    """Validate ``lr_scaling`` and return its rule (``"none"`` when the section is absent or null)."""
    scaling = cfg.get("lr_scaling") or {}
    rule = scaling.get("rule", "none")
    rule = one_of("lr_scaling.rule", "none" if rule is None else rule, tuple(LR_SCALING_RULES))
    if rule == "none":
        return rule
    integer("lr_scaling.base_batch_size", scaling.get("base_batch_size"),
            "an integer > 0: the global batch size optimizer.lr is meant for", low=1)
    batch_size = cfg.data.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("data.batch_size", batch_size, "an integer > 0 (the per-device batch size)",
                          f"lr_scaling.rule={rule} scales the learning rate with it")
    return rule


def check_config(cfg: DictConfig, trial: TrialContext | None = None) -> RunSettings:
    """Reject config values that need no data or model to judge, before anything is built."""
    metric, direction = objective_of(cfg)  # the task's defaults where the config leaves them open
    reduce = one_of("objective.reduce", cfg.objective.get("reduce", "best"), ("best", "final"))
    seed = cfg.get("seed")
    if seed is not None:
        integer("seed", seed, "a non-negative integer, or null for no seeding", low=0)
    for section in ("data", "model", "loss", "trainer"):
        if section == "loss" and loss_left_open(cfg):
            continue  # loss=auto: the data's task chooses it (lightopt.run.task)
        _import_target(section, cfg[section])
    check_trainer(cfg.trainer)
    check_early_stopping(cfg.get("early_stopping") or {})
    lr = check_optimizer(cfg.optimizer).lr  # the class's default when the config gives none
    rule = check_lr_scaling(cfg)
    tune_settings = tune.check_tune(cfg)  # before the checkpoint: tune=lr_find and ckpt_path exclude each other
    batch_finder = check_batch_size_finder(cfg)
    averaging = check_averaging(cfg.get("averaging"))
    cv = folds.check_cv(cfg)  # before the checkpoint: cv=kfold and ckpt_path exclude each other
    checkpoint = check_checkpoint(cfg.get("ckpt_path"))
    return RunSettings(
        objective=metric, direction=direction, reduce=reduce, lr=lr, lr_scaling=rule,
        tune=tune_settings, console=console.settings(cfg, in_sweep=trial is not None), trial=trial,
        resumed_run_id=tracking.previous_run_id(checkpoint),
        resumed=None if checkpoint is None else ResumeState.of(checkpoint), cv=cv, batch_size=batch_finder,
        averaging=averaging,
    )


def check_checkpoint(path: Any) -> dict[str, Any] | None:
    """The checkpoint at ``ckpt_path``, loaded with ``weights_only=True`` (a pickle that would run code is refused).

    Memory-mapped, so that checking a large checkpoint reads little of it; None without ``ckpt_path``.
    """
    if path is None:
        return None
    import torch

    file = Path(str(path))
    allowed = "the path of a checkpoint file of a lightopt run, e.g. outputs/<date>/<time>/checkpoints/last.ckpt"
    if not file.is_file():
        raise ConfigError("ckpt_path", str(path), allowed, "a directory" if file.is_dir() else "no such file")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - a damaged file, another format, or a pickle with code in it
        problem = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ConfigError("ckpt_path", str(path), allowed, f"it does not load as a checkpoint of plain tensors and "
                          f"values (torch.load weights_only=True: {problem})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError("ckpt_path", str(path), allowed, "it holds no state_dict: not a Lightning checkpoint")
    if len(checkpoint.get("optimizer_states") or []) != 1:
        raise ConfigError("ckpt_path", str(path), allowed, "it holds no optimizer state (saved with weights only?): "
                          "it cannot resume a run")
    return checkpoint


def _limit(key: str, value: Any, what: str, low: int) -> None:
    """A step or epoch limit: an integer >= ``low``, -1 for none, or null."""
    if value is None or value == -1 and not isinstance(value, bool):
        return
    integer(f"trainer.{key}", value, f"an integer >= {low} ({what}), -1 for no limit, or null", low=low)


def _share(key: str, value: Any, what: str) -> None:
    """A batch limit: an integer number of batches >= 1, a share in (0, 1], or null."""
    allowed = f"an integer >= 1 ({what}), a share of them in (0, 1], or null"
    if value is None:
        return
    if isinstance(value, float):
        number(f"trainer.{key}", value, allowed, low=0.0, high=1.0, low_open=True)
    else:
        integer(f"trainer.{key}", value, allowed, low=1)


def check_trainer(trainer: Any) -> None:
    """The ``trainer`` keys whose bad values Lightning would take silently or reject only mid-training."""
    _limit("max_epochs", trainer.get("max_epochs"), "passes over the training data", 1)
    _limit("max_steps", trainer.get("max_steps"), "optimizer steps", 1)
    _share("limit_train_batches", trainer.get("limit_train_batches"), "training batches per epoch")
    for key, what in (("accumulate_grad_batches", "batches per optimizer step"),
                      ("log_every_n_steps", "optimizer steps between writes of the train metrics")):
        if key in trainer:
            integer(f"trainer.{key}", trainer.get(key), f"an integer >= 1 ({what})", low=1)
    if trainer.get("check_val_every_n_epoch") is not None:
        integer("trainer.check_val_every_n_epoch", trainer.check_val_every_n_epoch, "an integer >= 1, or null",
                low=1)
    if trainer.get("gradient_clip_val") is not None:
        number("trainer.gradient_clip_val", trainer.gradient_clip_val, "a gradient norm >= 0, or null (no clipping)",
               low=0.0)
    if "threads" in trainer:  # a bad value refused before anything is built
        choose_threads(trainer.threads, cores=1, processes=1, environment=None)


def check_early_stopping(section: Any) -> None:
    if "patience" in section:
        integer("early_stopping.patience", section.get("patience"), "an integer >= 0 (validations)", low=0)
    if "min_delta" in section:
        number("early_stopping.min_delta", section.get("min_delta"), "a number >= 0 (in the metric's units)",
               low=0.0)


def check_resumable(ckpt_path: Any, resumed: ResumeState, module: Any) -> None:
    """The checkpoint fits ``module`` (same weight names and shapes) and its optimizer state fits the optimizer the
    run builds (same param groups, same hyperparameter names): else one line before training, not Lightning's
    state_dict traceback at the start of fit or torch's ``KeyError`` at the first step."""
    shapes = resumed.shapes
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing, unexpected = sorted(own.keys() - shapes.keys()), sorted(shapes.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & shapes.keys() if own[k] != shapes[k])
    if missing or unexpected or reshaped:
        example = (f"{reshaped[0]} is {list(shapes[reshaped[0]])} there, {list(own[reshaped[0]])} here" if reshaped
                   else f"{(missing or unexpected)[0]} is {'missing' if missing else 'unexpected'}")
        raise ConfigError("ckpt_path", str(ckpt_path), "a checkpoint of a run with this model config",
                          f"its weights do not fit this model: {len(missing)} missing, {len(unexpected)} unexpected, "
                          f"{len(reshaped)} of another shape ({example})")
    _check_optimizer_state(ckpt_path, resumed.optimizer_groups, module)


def _check_optimizer_state(ckpt_path: Any, saved: list[tuple[frozenset[str], int]], module: Any) -> None:
    optimizer = create_optimizer(module.model, module.optimizer_cfg, regularization=module.regularization_cfg,
                                 lr_multipliers=module.lr_multipliers, lr_layer_decay=module.lr_layer_decay)
    built = _group_summary(optimizer.param_groups)
    allowed = f"a checkpoint of a run with this optimizer config ({type(optimizer).__name__}, " \
              f"{len(built)} param group{'s' if len(built) > 1 else ''})"
    if [size for _, size in saved] != [size for _, size in built]:
        raise ConfigError("ckpt_path", str(ckpt_path), allowed, "its optimizer state has param groups of "
                          f"{[size for _, size in saved]} parameters, this run's {[size for _, size in built]}")
    lacking = sorted(set().union(*(keys - old for (keys, _), (old, _) in zip(built, saved, strict=True))))
    if lacking:
        raise ConfigError("ckpt_path", str(ckpt_path), allowed, "its optimizer state is another optimizer's: it "
                          f"lacks {', '.join(lacking)}")


def lr_scale_factor(rule: str, batch_size: int, world_size: int, accumulate: int, base_batch_size: int) -> float:
    """Factor on ``optimizer.lr`` for the global batch ``batch_size * world_size * accumulate``.

    ``linear``: B / base (Goyal et al., for SGD); ``sqrt``: sqrt(B / base) (keeps the gradient-noise
    scale, common for Adam); ``none``: 1.
    """
    global_batch = batch_size * world_size * accumulate
    return (global_batch / base_batch_size) ** LR_SCALING_RULES[rule]


def required_metrics(cfg: DictConfig) -> dict[str, Any]:
    """Metrics besides the objective that the config relies on, as ``{config key: metric name}``."""
    return {"schedule.monitor": cfg.schedule.monitor} if cfg.schedule.get("monitor") else {}
