"""A sweep published to W&B: one run per study (job type ``sweep-summary``, group = the study name, next
to the trials' runs) holding the trials table, the report's pictures and the best trials.
:func:`wandb_settings` finds the trials' W&B settings, :func:`log_to_wandb` publishes a built report,
:func:`log_sweep_summary` is the W&B run itself. The report (:mod:`lightopt.search.report`) decides what is
published and calls this at the end of a sweep; a single run's W&B logger is :mod:`lightopt.run.tracking`."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightopt.run.tracking import quiet_settings, redact, resolve_mode
from lightopt.search.trials import state_counts, trial_table

if TYPE_CHECKING:  # the report is built before it is published; this module never imports it at run time
    from lightopt.search.report.build import Report

SUMMARY_JOB_TYPE = "sweep-summary"  # the trials' runs have job type lightopt.run.tracking.TRIAL_JOB_TYPE
#: study user attribute holding the id of the sweep's W&B summary run
SUMMARY_RUN_ID_ATTR = "wandb_summary_run_id"
#: the trials table's columns after the values and parameters (a run directory means nothing on W&B)
TABLE_TAIL = ("steps", "seconds", "status")


def _loggers(cfg: Any) -> Mapping[str, Any]:
    """The ``logger`` section of a task config (OmegaConf or plain), as plain data."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        return (cfg or {}).get("logger") or {}
    try:
        section = OmegaConf.select(cfg, "logger", throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - e.g. an interpolation that only resolves inside Hydra
        return {}
    if not OmegaConf.is_config(section):
        return section or {}
    try:
        return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the keys read here are plain; keep the rest unresolved
        return OmegaConf.to_container(section, resolve=False)  # type: ignore[return-value]


def wandb_settings(configs: Iterable[Any]) -> dict[str, Any] | None:
    """The W&B logger section (``project``, ``entity``, ``mode``...) of the first config that logs to W&B.

    ``configs`` are task configs (the sweep's master config, the trials' composed configs); None when none
    of them has a W&B logger or its mode resolves to ``disabled``.
    """
    for cfg in configs:
        for section in _loggers(cfg).values():
            if not isinstance(section, Mapping):
                continue
            target = str(section.get("_target_", ""))
            if not (target.endswith("wandb_logger") or target.endswith("WandbLogger")):
                continue
            mode = "offline" if section.get("offline") else str(section.get("mode") or "auto")
            try:
                if resolve_mode(mode) == "disabled":
                    continue
            except Exception:  # noqa: BLE001 - a bad mode already failed the trials
                continue
            return {**section, "mode": mode}
    return None


def _summary(report: Report, names: Sequence[str]) -> dict[str, Any]:
    """The run summary: the study, its trial counts and its best trial (or Pareto front)."""
    summary: dict[str, Any] = {"study_name": report.info.study_name, "storage": report.info.storage_shown,
                               "n_trials": len(report.rows), "states": state_counts(report.rows),
                               "directions": report.directions, "objectives": list(names)}
    if len(report.directions) == 1 and report.best:
        best = report.best[0]
        summary |= {"best_value": best.value, "best_params": dict(best.params), "best_trial": best.number}
    elif report.best:
        summary["pareto_front"] = [{"number": t.number, "values": list(t.values or ()), "params": dict(t.params)}
                                   for t in report.best]
    return summary


def log_to_wandb(report: Report, settings: Mapping[str, Any]) -> Path | None:
    """The sweep as one W&B run (job type ``sweep-summary``, group = study name): trials table, pictures.

    One summary run per study: its id is kept in the study (:data:`SUMMARY_RUN_ID_ATTR`), so a rerun of
    the sweep (a resume, a rebuilt report) updates the same W&B run.
    """
    names = report.info.objective_names(len(report.directions), "objective_{}")
    table = trial_table(report.rows, len(report.directions), names)
    columns = ["number", "state", *table.values, *table.spread, *table.params, *TABLE_TAIL]
    run_id = report.study.user_attrs.get(SUMMARY_RUN_ID_ATTR)
    if not run_id:
        run_id = secrets.token_hex(8)
        report.study.set_user_attr(SUMMARY_RUN_ID_ATTR, run_id)
    return log_sweep_summary(
        report.info.sweep_dir, group=str(report.info.study_name), columns=columns, rows=table.select(columns),
        images=report.images, summary=_summary(report, names), project=settings.get("project") or "lightopt",
        entity=settings.get("entity"), mode=str(settings.get("mode") or "auto"),
        tags=list(settings.get("tags") or []), run_id=run_id)


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
    summary, then finishes the run. Mode as for the trials (:func:`~lightopt.run.tracking.resolve_mode`:
    offline without credentials, never a prompt); files go to ``save_dir/wandb``. With ``run_id`` the run of
    that id is continued (created the first time). Returns the run's directory, or None when the mode is
    ``disabled``.
    """
    import wandb

    resolved = resolve_mode(mode)
    if resolved == "disabled":
        return None
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, dir=str(save_dir), mode=resolved, group=group,
                     job_type=SUMMARY_JOB_TYPE, name=f"{group}-summary", tags=sorted(set(tags)) or None,
                     id=run_id, resume="allow" if run_id else None, settings=quiet_settings(),
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
