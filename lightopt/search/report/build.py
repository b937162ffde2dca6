"""Building a sweep's report: :func:`make_report` reads the study, picks the best trials, draws the
pictures, writes ``comparison.csv`` and ``report.html`` into the sweep directory, and returns a
:class:`Report` of what it wrote. How each part is made lives in the sibling modules."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt.search.report.comparison import Comparison, better, comparison_table, write_comparison_csv
from lightopt.search.report.page import render_page
from lightopt.search.report.pictures import (
    PICTURES,
    Picture,
    Pictures,
    best_curves,
    comparison_pictures,
    optuna_pictures,
)
from lightopt.search.report.study import SweepInfo, load_study, quiet_optuna, sweep_info
from lightopt.search.trials import TrialRow, trial_rows

log = logging.getLogger(__name__)
TOP = 10  # trials in the "Best trials" table of a single-objective sweep


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, its pictures, the trials and the best of them."""

    html: Path
    pictures: list[Picture]
    rows: list[TrialRow]
    info: SweepInfo
    directions: list[str]
    best: list[TrialRow]  # the best trial, or the Pareto front
    comparison: Comparison | None
    seconds: float
    study: Any  # the Optuna study reported on

    @property
    def images(self) -> dict[str, Path]:
        """The PNGs written, by file stem."""
        return {Path(p.file).stem: self.info.sweep_dir / p.file for p in self.pictures if p.written}


def build_report(sweep_dir: str | Path, study: Any = None) -> Path:
    """Write ``report.html`` and its PNGs into ``sweep_dir`` and return the page's path.

    ``study``: the sweep's Optuna study when the caller has it open (the sweeper); otherwise it is loaded
    from the sweep's storage. Raises :class:`~lightopt.search.report.study.NotASweepDir` for a directory
    that is not a sweep directory.
    """
    return make_report(sweep_dir, study).html


def _best_row(rows: Sequence[TrialRow], directions: Sequence[str]) -> TrialRow | None:
    """The completed trial with the best first value (the lowest number among equals)."""
    done = [t for t in rows if t.state == "COMPLETE" and t.values]
    if not done:
        return None
    key = better(directions[0])
    return min(done, key=lambda t: (key(t.values[0]), t.number))  # type: ignore[index]


def _front(rows: Sequence[TrialRow], directions: Sequence[str], pareto: set[int]) -> list[TrialRow]:
    """The Pareto front (several objectives) or the :data:`TOP` best completed trials, best first."""
    if len(directions) > 1:
        return sorted((t for t in rows if t.number in pareto), key=lambda t: t.number)
    key = better(directions[0])
    return sorted((t for t in rows if t.state == "COMPLETE" and t.value is not None),
                  key=lambda t: (key(t.value), t.number))[:TOP]  # type: ignore[arg-type]


def _clear(sweep: Path) -> None:
    """Remove what an earlier build wrote, so a picture that cannot be drawn now is not shown stale."""
    for name in [*PICTURES, *(p.name for p in sweep.glob("history_*.png")), "comparison.csv"]:
        (sweep / name).unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page


def make_report(sweep_dir: str | Path, study: Any = None) -> Report:
    """:func:`build_report`, returning everything it wrote (for the W&B sweep summary)."""
    start = time.perf_counter()
    info = sweep_info(sweep_dir)
    if study is None:
        study = load_study(info)
    else:
        info.study_name = study.study_name
    sweep = info.sweep_dir
    _clear(sweep)
    with quiet_optuna():
        frozen = study.get_trials(deepcopy=False)
        directions = [d.name.lower() for d in study.directions]
        multi = len(directions) > 1
        pareto = {t.number for t in study.best_trials} if multi and any(
            t.state.name == "COMPLETE" for t in frozen) else set()
    rows = trial_rows(frozen)
    names = info.objective_names(len(directions))
    pics = Pictures(sweep)
    optuna_pictures(pics, study, info)
    best = _best_row([t for t in rows if t.number in pareto] if multi else rows, directions)
    best_curves(pics, sweep, best, multi, names[0])

    order = {k: list(d.choices) for t in frozen for k, d in t.distributions.items() if hasattr(d, "choices")}
    comp = comparison_table(rows, directions[0], order=order)
    comp_pics: list[Picture] = []
    if comp is not None:
        write_comparison_csv(sweep / "comparison.csv", comp)
        comp_pics = comparison_pictures(pics, sweep, comp, rows, names[0])

    front = _front(rows, directions, pareto)
    path = sweep / "report.html"
    _write(path, render_page(info, study.study_name, rows, directions, names, pics.pictures, comp_pics, comp,
                             front, best))
    seconds = time.perf_counter() - start
    log.info("sweep report: %s (%.1f s)", path, seconds)
    return Report(path, pics.pictures, rows, info, directions, [best] if not multi and best else front, comp,
                  seconds, study)
