"""The sweep's running outputs in its directory, rewritten after every trial (:class:`RunningOutputs`):
``trials.csv`` and ``optimization_results.yaml``; and the table of the best trials printed when the sweep
ends. The report (``report.html``) is built once at the end by :mod:`lightopt.search.report`."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lightopt.formatting import fmt
from lightopt.search.trials import TableLayout, TrialRow, state_counts, table_layout, trial_rows, trial_table
from lightopt.storage import hide_password

log = logging.getLogger(__name__)


class RunningOutputs:
    """``trials.csv`` and ``optimization_results.yaml`` of one sweep process, rewritten after every trial.

    A finished trial does not change, so its row and its CSV line are built once: a rewrite writes lines
    already formatted and costs about the same however many trials the study holds.
    """

    def __init__(self, sweep_dir: Path, n_objectives: int, objectives: Sequence[str] | None,
                 first_params: Sequence[str], storage_url: str) -> None:
        self.sweep_dir, self.n_objectives, self.objectives = sweep_dir, n_objectives, objectives
        self.first_params, self.storage_url = list(first_params), storage_url
        self._finished: dict[int, TrialRow] = {}
        self._lines: dict[int, str] = {}  # finished trials' CSV lines under self._layout
        self._layout: TableLayout | None = None

    def rows(self, trials: Sequence[FrozenTrial]) -> list[TrialRow]:
        """The rows of ``trials`` (a finished trial's built once)."""
        fresh = [t for t in trials if t.number not in self._finished]
        built = dict(zip((t.number for t in fresh), trial_rows(fresh), strict=True))
        self._finished.update({t.number: built[t.number] for t in fresh if t.state.is_finished()})
        return [self._finished.get(t.number) or built[t.number] for t in trials]

    def write(self, study: optuna.Study, trials: Sequence[FrozenTrial], ended: str | None = None) -> list[TrialRow]:
        rows = self.rows(trials)
        self._write_csv(rows)
        write_optimization_results(self.sweep_dir / "optimization_results.yaml", study, trials, rows,
                                   self.storage_url, ended)
        return rows

    def _write_csv(self, rows: Sequence[TrialRow]) -> None:
        """One line per trial, rewritten whole through a temporary file, so a reader never sees half of it."""
        layout = table_layout(rows, self.n_objectives, self.objectives, self.first_params)
        if layout != self._layout:  # a parameter or cv_std appeared: every line changes
            self._layout, self._lines = layout, {}
        lines = [self._lines.get(r.number) or _csv_line(layout.cells(r)) for r in rows]
        self._lines.update({r.number: line for r, line in zip(rows, lines, strict=True) if r.number in self._finished})
        path = self.sweep_dir / "trials.csv"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per sweep process sharing the dir
        with open(tmp, "w", newline="") as f:
            f.write(_csv_line(layout.columns))
            f.writelines(lines)
        tmp.replace(path)


def _csv_line(cells: Sequence[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(["" if v is None else v for v in cells])
    return out.getvalue()


def write_optimization_results(path: Path, study: optuna.Study, trials: Sequence[FrozenTrial],
                               rows: Sequence[TrialRow], storage_url: str, ended: str | None = None) -> None:
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
    out["trials"] = state_counts(rows)
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
