"""The sweep's running outputs in its directory, rewritten after every trial: ``trials.csv`` and
``optimization_results.yaml``; and the table of the best trials printed when the sweep ends. The report
(``report.html``) is built once at the end by :mod:`lightopt.search.report`."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lightopt.formatting import fmt
from lightopt.search.trials import TrialRow, state_counts, trial_rows, trial_table
from lightopt.storage import hide_password

log = logging.getLogger(__name__)


def write_trials_csv(path: Path, rows: Sequence[TrialRow], n_objectives: int, objectives: Sequence[str] | None,
                     first_params: Sequence[str] = ()) -> None:
    """One line per trial (rewritten whole, through a temporary file so a reader never sees half of it)."""
    table = trial_table(rows, n_objectives, objectives, first_params)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per sweep process sharing the dir
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        writer.writerows([["" if v is None else v for v in row] for row in table.rows])
    tmp.replace(path)


def write_optimization_results(path: Path, study: optuna.Study, trials: Sequence[FrozenTrial],
                               storage_url: str, ended: str | None = None) -> None:
    """Best parameters and value (one objective) or the Pareto front (several), as hydra-optuna-sweeper; ``ended``:
    why the sweep stopped before ``n_trials`` (a timeout, no improvement), if it did."""
    out: dict[str, Any] = {"name": "optuna"}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(study.directions) == 1:
        best = study.best_trial if complete else None
        out["best_params"] = dict(best.params) if best else None
        out["best_value"] = best.value if best else None
        out["best_trial"] = best.number if best else None
        out["best_run_dir"] = best.user_attrs.get("run_dir") if best else None
    else:
        out["solutions"] = [{"number": t.number, "params": dict(t.params), "values": list(t.values),
                             "run_dir": t.user_attrs.get("run_dir")} for t in (study.best_trials if complete else [])]
    out["directions"] = [d.name.lower() for d in study.directions]
    out["study_name"] = study.study_name
    out["storage"] = hide_password(storage_url)
    out["trials"] = state_counts(trial_rows(trials))
    if ended is not None:
        out["ended"] = ended
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    OmegaConf.save(OmegaConf.create(out), tmp)
    tmp.replace(path)


def print_summary(study: optuna.Study, trials: Sequence[FrozenTrial], first_params: Sequence[str] = (),
                  objectives: Sequence[str] | None = None, top: int = 5) -> None:
    """A short table of the best trials, or of the Pareto front for several objectives."""
    from rich.console import Console
    from rich.table import Table

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.info("no trial completed")
        return
    if len(study.directions) == 1:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        shown = sorted(complete, key=lambda t: t.value, reverse=reverse)[:top]  # type: ignore[arg-type,return-value]
        title = f"best {len(shown)} of {len(trials)} trials ({study.direction.name.lower()})"
    else:
        shown = sorted(study.best_trials, key=lambda t: t.number)
        title = f"Pareto front: {len(shown)} of {len(trials)} trials"
    table = trial_table(trial_rows(shown), len(study.directions), objectives, first_params)
    numbers = [*table.values, *table.spread]  # the values, and a cross-validated sweep's spread over folds
    columns = ["number", *numbers, *table.params, "steps", "seconds"]
    rich_table = Table(title=title)
    for name in ["#", *[c.replace("_", " ", 1) for c in numbers], *table.params, "steps", "seconds"]:
        rich_table.add_column(name, overflow="fold")
    for row in table.select(columns):
        number, values, rest = row[0], row[1:1 + len(numbers)], row[1 + len(numbers):]
        rich_table.add_row(str(number), *[fmt(v, 6) for v in values], *["" if v is None else str(v) for v in rest])
    Console(width=max(100, min(200, 20 * (len(table.params) + 4)))).print(rich_table)
