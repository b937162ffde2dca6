"""The optimizer x schedule comparison as numbers: the pure table (:func:`comparison_table`), the text of a
cell (:func:`cell_text`) and ``comparison.csv``. Its heatmap and curves are drawn in
:mod:`lightopt.search.report.pictures`; where it goes on the page is the template's business."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightopt.formatting import fmt
from lightopt.search.trials import TrialRow

ROW_KEY, COL_KEY, SEED_KEY = "optimizer", "schedule", "seed"
PARAM_DIGITS = 6  # a parameter value as the sweep wrote it (``adam``, ``0.001``)


def better(direction: str) -> Callable[[float], float]:
    """A sort key putting the best value first for ``direction``."""
    return (lambda v: -v) if direction == "maximize" else (lambda v: v)


@dataclass
class Cell:
    """The objective of one optimizer x schedule pair.

    ``mean``/``std`` are over the completed trials of the pair's best setting of the other searched
    parameters (only the seed repeats in a plain comparison, so: over seeds); ``std`` is the sample standard
    deviation (n - 1), None for fewer than two values. ``trials`` are those trials' numbers, ``others`` that
    setting (empty when nothing but the seed varies), ``incomplete`` the pair's pruned and failed trials.
    """

    mean: float | None = None
    std: float | None = None
    n: int = 0
    trials: list[int] = field(default_factory=list)
    others: dict[str, Any] = field(default_factory=dict)
    incomplete: int = 0


@dataclass
class Comparison:
    """The objective by optimizer (rows) and schedule (columns); see :func:`comparison_table`."""

    row_key: str
    col_key: str
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], Cell]
    direction: str
    seeds: int  # the most seeds any pair's mean is over
    varied: list[str]  # other searched parameters, whose best setting each pair takes

    def best_col(self, row: str) -> str | None:
        """The schedule with the best mean for optimizer ``row`` (None when none completed)."""
        done = [(c, self.cells[row, c].mean) for c in self.cols
                if (row, c) in self.cells and self.cells[row, c].mean is not None]
        key = better(self.direction)
        return min(done, key=lambda cv: key(cv[1]))[0] if done else None


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return mean, None
    return mean, statistics.stdev(values)


def _axis(finished: Sequence[TrialRow], key: str, order: Sequence[Any]) -> list[str]:
    """The values of ``key`` that trials took: in ``order`` first, then by first appearance."""
    seen = [fmt(v, PARAM_DIGITS) for v in order]
    for t in finished:
        if fmt(t.params[key], PARAM_DIGITS) not in seen:
            seen.append(fmt(t.params[key], PARAM_DIGITS))
    present = {fmt(t.params[key], PARAM_DIGITS) for t in finished}
    return [v for v in seen if v in present]


def _cell(pair: Sequence[TrialRow], fixed: set[str], direction: str) -> Cell:
    """The cell of one pair's finished trials: its best group of completed trials over the other parameters."""
    cell = Cell(incomplete=sum(t.state != "COMPLETE" or t.value is None for t in pair))
    groups: dict[tuple[tuple[str, str], ...], list[TrialRow]] = {}
    for t in pair:
        if t.state == "COMPLETE" and t.value is not None and not math.isnan(t.value):
            others = tuple(sorted((k, fmt(v, PARAM_DIGITS)) for k, v in t.params.items() if k not in fixed))
            groups.setdefault(others, []).append(t)
    if groups:
        key = better(direction)
        best = min(groups.values(), key=lambda g: (key(_mean_std([t.value for t in g])[0]), -len(g)))
        cell.mean, cell.std = _mean_std([t.value for t in best])  # type: ignore[misc]
        cell.n, cell.trials = len(best), [t.number for t in best]
        cell.others = {k: v for k, v in best[0].params.items() if k not in fixed}
    return cell


def comparison_table(trials: Sequence[TrialRow], direction: str = "maximize", row_key: str = ROW_KEY,
                     col_key: str = COL_KEY, seed_key: str = SEED_KEY,
                     order: Mapping[str, Sequence[Any]] | None = None) -> Comparison | None:
    """The objective (first value) by ``row_key`` x ``col_key``; None unless trials searched both keys.

    Every pair with a finished trial gets a cell. Its completed trials are grouped by the other searched
    parameters but ``seed_key``; the group with the best mean (for ``direction``) is the cell: mean and
    sample std over its trials, i.e. over seeds. ``order`` gives the row/column order per key (the sweep's
    choices); otherwise first appearance.
    """
    finished = [t for t in trials if t.state in ("COMPLETE", "PRUNED", "FAIL")
                and row_key in t.params and col_key in t.params]
    if not finished:
        return None
    order = order or {}
    rows, cols = _axis(finished, row_key, order.get(row_key, ())), _axis(finished, col_key, order.get(col_key, ()))
    fixed = {row_key, col_key, seed_key}
    varied = sorted({k for t in finished for k in t.params if k not in fixed
                     and len({fmt(u.params.get(k), PARAM_DIGITS) for u in finished}) > 1})
    cells: dict[tuple[str, str], Cell] = {}
    for r in rows:
        for c in cols:
            pair = [t for t in finished if fmt(t.params[row_key], PARAM_DIGITS) == r
                    and fmt(t.params[col_key], PARAM_DIGITS) == c]
            if pair:
                cells[r, c] = _cell(pair, fixed, direction)
    seeds = max((cell.n for cell in cells.values()), default=0)
    return Comparison(row_key, col_key, rows, cols, cells, direction, seeds, varied)


def cell_text(cell: Cell | None) -> str:
    """``0.9123 ± 0.0042 (n=3)``, ``0.91`` for one value, ``-`` when nothing completed."""
    if cell is None or cell.mean is None:
        return "-" if cell is None or not cell.incomplete else f"- ({cell.incomplete} not completed)"
    text = fmt(cell.mean)
    if cell.std is not None:
        text += f" ± {fmt(cell.std, 2)}"
    if cell.n > 1:
        text += f" (n={cell.n})"
    return text


def write_comparison_csv(path: Path, comp: Comparison) -> None:
    """One line per optimizer x schedule pair that ran: mean, std, n, trial numbers, the other parameters."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([comp.row_key, comp.col_key, "mean", "std", "n", "trials", "not_completed", *comp.varied])
        for r in comp.rows:
            for c in comp.cols:
                cell = comp.cells.get((r, c))
                if cell is None:
                    continue
                writer.writerow([r, c, "" if cell.mean is None else cell.mean, "" if cell.std is None else cell.std,
                                 cell.n, " ".join(map(str, cell.trials)), cell.incomplete,
                                 *[fmt(cell.others[k], PARAM_DIGITS) if k in cell.others else "" for k in comp.varied]])
