"""Experiment tracking at the edges of a run: W&B without prompts, run names, redacted configs.

- :func:`wandb_logger` builds Lightning's ``WandbLogger`` that never blocks: with ``mode: auto`` it logs
  online when credentials exist (``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``) and offline
  otherwise, printing one line on how to upload; its files go into the run directory.
- :func:`run_name` / :func:`run_tags` derive a readable name and tags from the Hydra overrides and choices.
- :func:`redact` hides passwords and keys before a config leaves the machine.
- In a sweep each trial's run has ``group`` = the study name and ``job_type`` = ``trial``
  (:func:`hydra_context`); the sweep's own ``sweep-summary`` run in that group is
  :mod:`lightopt.search.wandb_summary`.

Which loggers a run has is configuration (``conf/logger/``); training itself lives in :mod:`lightopt.run.training`.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightopt.contract import TrialContext
from lightopt.errors import ConfigError
from lightopt.formatting import short_number
from lightopt.storage import hide_passwords

MODES = ("auto", "online", "offline", "disabled")
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.I)
# groups whose choice names a run better than its keys do, in the order they appear in a name
NAMING_GROUPS = ("optimizer", "schedule")
TAG_GROUPS = ("optimizer", "schedule", "model", "data")
TRIAL_JOB_TYPE = "trial"  # W&B job type of a sweep trial's run (group = study name)


def has_wandb_credentials() -> bool:
    """Whether W&B could log in without asking: an API key in the environment or in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """``auto`` becomes ``online`` with credentials and ``offline`` without."""
    if mode not in MODES:
        raise ConfigError("logger.wandb.mode", mode, " | ".join(MODES))
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys and URL passwords replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return hide_passwords(value)
    return value


def run_name(overrides: Sequence[str], choices: Mapping[str, Any] | None = None,
             keys: Sequence[str] | None = None) -> str:
    """A short name from the task overrides, e.g. ``adamw-cosine-lr=0.003``.

    The chosen optimizer and schedule come first (from ``choices`` when given), then every other override
    (only those of ``keys`` when given: a sweep trial's searched keys) as ``<last key part>=<value>``,
    numbers to 4 significant digits; Hydra's own keys are left out.
    """
    choices = choices or {}
    parts = [str(choices[g]) for g in NAMING_GROUPS if choices.get(g)]
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not value or key.startswith("hydra") or key in NAMING_GROUPS or (keys is not None and key not in keys):
            continue
        parts.append(f"{key.split('.')[-1].split('/')[-1]}={short_number(value)}")
    return "-".join(parts) or "run"


def run_tags(choices: Mapping[str, Any]) -> list[str]:
    """Tags from the chosen optimizer, schedule, model and data configs."""
    return [f"{g}:{choices[g]}" for g in TAG_GROUPS if choices.get(g)]


def hydra_context() -> dict[str, Any]:
    """Name, tags, group and job type of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = dict(hc.runtime.choices)
    trial = TrialContext.current()
    # a sweep trial is named by number and searched values: its fixed overrides are those of every trial
    name = run_name(list(hc.overrides.task), choices, None if trial is None else list(trial.searched))
    context: dict[str, Any] = {"name": name if trial is None else f"{trial.number}-{name}", "tags": run_tags(choices)}
    if trial is not None:  # a sweep's trials form one W&B group, with the sweep-summary run
        context |= {"group": trial.study_name, "job_type": TRIAL_JOB_TYPE}
    return context


def wandb_logger(
    save_dir: str | Path,
    project: str = "lightopt",
    entity: str | None = None,
    mode: str = "auto",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Iterable[str] = (),
    id: str | None = None,  # noqa: A002 - W&B's own name for the run id
    log_model: bool = False,
    fold: int | None = None,
    save_requirements: bool | str = "auto",
) -> Any:
    """Lightning's ``WandbLogger``, online or offline by :func:`resolve_mode`, files in ``save_dir``.

    ``name``, ``tags``, ``group`` and ``job_type`` default to what :func:`hydra_context` derives. ``fold`` (1-based,
    set by a cross-validated run): the run of one fold, ``-fold<k>`` after its name, and outside a sweep the folds
    of one run in a group of their own. ``save_requirements`` (:func:`requirements_wanted`): the installed
    packages as the run's ``requirements.txt``.
    """
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    in_sweep = TrialContext.current() is not None
    requirements = requirements_wanted(save_requirements, in_sweep)
    context = hydra_context()
    tags = sorted(set(tags) | set(context.get("tags", [])))
    from lightning.pytorch.utilities import rank_zero_only

    # a sweep says it once; DDP ranks other than 0 log nothing to W&B
    if resolved == "offline" and mode == "auto" and not in_sweep and rank_zero_only.rank == 0:
        print(
            f"W&B: no credentials found, logging offline to {Path(save_dir) / 'wandb'}; "
            f"upload later with: wandb sync {Path(save_dir) / 'wandb'}/offline-run-*",
            flush=True,
        )
    import wandb

    wandb.setup(settings=quiet_settings())  # the process's W&B terminal output: Lightning's defaults warn
    name = name or context.get("name")
    if fold is not None:
        group = group or context.get("group") or f"{name or 'run'}-cv-{Path(save_dir).parent.name}"
        name = f"{name or 'run'}-fold{fold}"
    return WandbLogger(
        project=project,
        entity=entity,
        save_dir=str(save_dir),
        mode=resolved,
        name=name,
        group=group or context.get("group"),
        job_type=job_type or context.get("job_type", "train"),
        tags=tags or None,
        id=id,
        resume="allow" if id else None,
        log_model=log_model,
        settings=quiet_settings(save_requirements=requirements),
    )


def requirements_wanted(value: bool | str, in_sweep: bool) -> bool:
    """``auto``: a run's own ``requirements.txt`` unless it is a sweep's trial; a sweep's trials share one
    environment, recorded once by its ``sweep-summary`` run, and listing the installed packages costs ~0.15 s a run."""
    if value == "auto":
        return not in_sweep
    if isinstance(value, bool):
        return value
    raise ConfigError("logger.wandb.save_requirements", value, "auto | true | false")


def quiet_settings(save_requirements: bool = True) -> Any:
    """W&B settings for every run lightopt starts: no login prompt, no console capture; ``save_requirements``
    False leaves out the list of installed packages."""
    import wandb

    # no login prompt, no console capture racing Lightning's progress bar
    return wandb.Settings(console="off", silent=True, x_save_requirements=save_requirements)


# --- the run's edges: config at the start, summary at the end, run id across resumes --------------------

CHECKPOINT_KEY = "lightopt_wandb_run_id"


def is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def log_config(loggers: Iterable[Any], config: Mapping[str, Any]) -> None:
    """Give every logger the resolved config as nested hyperparameters, secrets redacted."""
    clean = redact(dict(config))
    for logger in loggers:
        logger.log_hyperparams(clean)


def finish(loggers: Iterable[Any], summary: Mapping[str, Any], exit_code: int = 0) -> None:
    """Put the run's outcome (objective, status, ...) into W&B's summary and close the W&B run; a non-zero
    ``exit_code`` (an interrupted run) marks it as not finished."""
    for logger in loggers:
        if is_wandb(logger):
            run = logger.experiment
            run.summary.update({k: v for k, v in summary.items() if v is not None})
            run.finish(exit_code=exit_code)


def previous_run_id(checkpoint: Mapping[str, Any] | None) -> str | None:
    """The W&B run id stored in a (safely loaded) checkpoint by ``RunIdInCheckpoint``: a resume continues that run."""
    run_id = None if checkpoint is None else checkpoint.get(CHECKPOINT_KEY)
    return run_id if isinstance(run_id, str) else None


def _run_id_callback() -> Any:
    from lightning.pytorch.callbacks import Callback

    class RunIdInCheckpoint(Callback):
        """Keeps the W&B run id in every checkpoint."""

        def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            ids = [lg.version for lg in trainer.loggers if is_wandb(lg)]
            if ids:
                checkpoint[CHECKPOINT_KEY] = ids[0]

    return RunIdInCheckpoint()


def callbacks(loggers: Iterable[Any]) -> list[Any]:
    """Callbacks the loggers need (the run-id keeper when W&B is among them)."""
    return [_run_id_callback()] if any(is_wandb(lg) for lg in loggers) else []
