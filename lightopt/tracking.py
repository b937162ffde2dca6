"""Experiment tracking at the edges of a run: W&B without prompts, run names, redacted configs.

- :func:`wandb_logger` builds Lightning's ``WandbLogger`` that never blocks: with ``mode: auto`` it logs
  online when credentials exist (``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``) and offline
  otherwise, printing one line on how to upload; its files go into the run directory.
- :func:`run_name` / :func:`run_tags` derive a readable name and tags from the Hydra overrides and choices.
- :func:`redact` hides passwords and keys before a config leaves the machine.
- In a sweep each trial's run has ``group`` = the study name and ``job_type`` = ``trial``
  (:func:`hydra_context`); :func:`log_sweep_summary` adds one ``sweep-summary`` run to that group at the
  end (the trials table and the report's pictures, called through :func:`lightopt.report.after_sweep`).

Which loggers a run has is configuration (``conf/logger/``); training itself lives in :mod:`lightopt.train`.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightopt.errors import ConfigError

MODES = ("auto", "online", "offline", "disabled")
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)
# groups whose choice names a run better than its keys do, in the order they appear in a name
NAMING_GROUPS = ("optimizer", "schedule")
TAG_GROUPS = ("optimizer", "schedule", "model", "data")
TRIAL_JOB_TYPE, SUMMARY_JOB_TYPE = "trial", "sweep-summary"  # W&B job types in a sweep (group = study name)


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
        return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)
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
        parts.append(f"{key.split('.')[-1].split('/')[-1]}={_short_number(value)}")
    return "-".join(parts) or "run"


def _short_number(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    short = f"{value:.4g}"
    return short if len(short) < len(text) else text


def run_tags(choices: Mapping[str, Any]) -> list[str]:
    """Tags from the chosen optimizer, schedule, model and data configs."""
    return [f"{g}:{choices[g]}" for g in TAG_GROUPS if choices.get(g)]


def hydra_context() -> dict[str, Any]:
    """Name, tags, group and job type of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    from lightopt.pruning import current_sweep_trial

    hc = HydraConfig.get()
    choices = dict(hc.runtime.choices)
    sweep = current_sweep_trial()
    # a sweep trial is named by number and searched values: its fixed overrides are those of every trial
    searched = hc.sweeper.get("searched") if sweep is not None else None
    name = run_name(list(hc.overrides.task), choices, None if searched is None else list(searched))
    context: dict[str, Any] = {"name": name if searched is None else f"{sweep.number}-{name}",
                               "tags": run_tags(choices)}
    if sweep is not None:  # a sweep's trials form one W&B group, with the sweep-summary run
        context |= {"group": sweep.study_name, "job_type": TRIAL_JOB_TYPE}
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
) -> Any:
    """Lightning's ``WandbLogger``, online or offline by :func:`resolve_mode`, files in ``save_dir``.

    ``name``, ``tags``, ``group`` and ``job_type`` default to what :func:`hydra_context` derives.
    """
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    context = hydra_context()
    tags = sorted(set(tags) | set(context.get("tags", [])))
    if resolved == "offline" and mode == "auto":
        print(
            f"W&B: no credentials found, logging offline to {Path(save_dir) / 'wandb'}; "
            f"upload later with: wandb sync {Path(save_dir) / 'wandb'}/offline-run-*",
            flush=True,
        )
    return WandbLogger(
        project=project,
        entity=entity,
        save_dir=str(save_dir),
        mode=resolved,
        name=name or context.get("name"),
        group=group or context.get("group"),
        job_type=job_type or context.get("job_type", "train"),
        tags=tags or None,
        id=id,
        resume="allow" if id else None,
        log_model=log_model,
        settings=_quiet_settings(),
    )


def log_sweep_summary(
    save_dir: str | Path,
    group: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    images: Mapping[str, str | Path] | None = None,
    summary: Mapping[str, Any] | None = None,
    project: str = "lightopt",
    entity: str | None = None,
    mode: str = "auto",
    tags: Iterable[str] = (),
    run_id: str | None = None,
) -> Path | None:
    """One W&B run for a whole sweep: job type ``sweep-summary`` in the trials' ``group`` (the study name).

    Logs the trials as a ``wandb.Table`` (``columns``/``rows``), each of ``images`` (name -> PNG) as a
    ``wandb.Image`` under ``report/<name>``, and ``summary`` (best value and params...) into the run's
    summary, then finishes the run. Mode as for the trials (:func:`resolve_mode`: offline without
    credentials, never a prompt); files go to ``save_dir/wandb``. With ``run_id`` the run of that id is
    continued (created the first time). Returns the run's directory, or None when the mode is ``disabled``.
    """
    import wandb

    resolved = resolve_mode(mode)
    if resolved == "disabled":
        return None
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, dir=str(save_dir), mode=resolved, group=group,
                     job_type=SUMMARY_JOB_TYPE, name=f"{group}-summary", tags=sorted(set(tags)) or None,
                     id=run_id, resume="allow" if run_id else None, settings=_quiet_settings(),
                     reinit="create_new")
    try:
        data: dict[str, Any] = {"trials": wandb.Table(columns=list(columns), data=[list(r) for r in rows],
                                                      allow_mixed_types=True)}
        data |= {f"report/{name}": wandb.Image(str(path)) for name, path in (images or {}).items()}
        run.log(data)
        run.summary.update(redact({k: v for k, v in (summary or {}).items() if v is not None}))
        run_dir = Path(run.dir).parent  # <save_dir>/wandb/<offline-run-...>/files -> the run's directory
    finally:
        run.finish()
    if resolved == "offline":
        print(f"W&B: sweep summary logged offline to {run_dir}; upload with: wandb sync {run_dir}", flush=True)
    return run_dir


def _quiet_settings() -> Any:
    import wandb

    # no login prompt, no console capture racing Lightning's progress bar
    return wandb.Settings(console="off", silent=True)


# --- the run's edges: config at the start, summary at the end, run id across resumes --------------------

CHECKPOINT_KEY = "lightopt_wandb_run_id"


def is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def log_config(loggers: Iterable[Any], config: Mapping[str, Any]) -> None:
    """Give every logger the resolved config as nested hyperparameters, secrets redacted."""
    clean = redact(dict(config))
    for logger in loggers:
        logger.log_hyperparams(clean)


def finish(loggers: Iterable[Any], summary: Mapping[str, Any]) -> None:
    """Put the run's outcome (objective, status, ...) into W&B's summary and close the W&B run."""
    for logger in loggers:
        if is_wandb(logger):
            run = logger.experiment
            run.summary.update({k: v for k, v in summary.items() if v is not None})
            run.finish()


def previous_run_id(ckpt_path: str | None) -> str | None:
    """The W&B run id stored in a checkpoint by :class:`RunIdInCheckpoint`, so a resume continues that run."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    import torch

    return torch.load(ckpt_path, map_location="cpu", weights_only=False).get(CHECKPOINT_KEY)


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
