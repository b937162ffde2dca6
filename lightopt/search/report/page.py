"""``report.html``: what each part of the page says (the meta table, the trials tables, the comparison
table, as text) and its rendering from ``templates/report.html.j2`` (Jinja2, autoescaped; the layout and
the CSS are in the template). Which trials and pictures the page shows is decided by
:mod:`lightopt.search.report.build`."""

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt.formatting import fmt
from lightopt.search.report.comparison import COL_KEY, PARAM_DIGITS, ROW_KEY, Comparison, cell_text
from lightopt.search.report.pictures import STATE_WORDS, Picture
from lightopt.search.report.runs import run_dir
from lightopt.search.report.study import SweepInfo
from lightopt.search.trials import TrialRow, state_counts, trial_table

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
VALUE_DIGITS = 6


@functools.cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


@dataclass(frozen=True)
class Link:
    """A file of the sweep directory: ``href`` relative to it, None (plain text) when missing or outside it."""

    text: str
    href: str | None = None


def link(sweep_dir: Path, target: Path, text: str) -> Link:
    """A link to ``target`` when it is a file inside ``sweep_dir`` (the page opens offline), else plain text."""
    try:
        rel = target.resolve().relative_to(sweep_dir.resolve())
    except (ValueError, OSError):
        return Link(text)
    return Link(text, rel.as_posix()) if target.is_file() else Link(text)


@dataclass(frozen=True)
class TrialLine:
    """One row of a trials table, as text."""

    number: int
    state: str
    values: list[str]
    params: list[str]
    steps: str
    seconds: str
    status: str
    run: Link
    best: bool


@dataclass(frozen=True)
class TrialsView:
    """A trials table: its header and its rows."""

    head: list[str]
    lines: list[TrialLine]


def trials_view(sweep_dir: Path, rows: Sequence[TrialRow], value_names: Sequence[str],
                highlight: Collection[int] = ()) -> TrialsView:
    """The rows of :func:`lightopt.search.trials.trial_table`, headed ``#``, ``state``, ``value_names``..."""
    table = trial_table(rows, len(value_names))
    col = {c: i for i, c in enumerate(table.columns)}
    lines = []
    for t, raw in zip(rows, table.rows, strict=True):
        lines.append(TrialLine(
            t.number, t.state, [fmt(raw[col[v]], VALUE_DIGITS) for v in table.values],
            [fmt(raw[col[p]], PARAM_DIGITS) if p in t.params else "" for p in table.params],
            *("" if raw[col[c]] is None else str(raw[col[c]]) for c in ("steps", "seconds", "status")),
            link(sweep_dir, run_dir(sweep_dir, t) / "results.json", "results.json"), t.number in highlight))
    return TrialsView(["#", "state", *value_names, *table.params, "steps", "seconds", "status", "run"], lines)


def _meta(info: SweepInfo, study_name: str, rows: Sequence[TrialRow], directions: Sequence[str],
          names: Sequence[str], front: Sequence[TrialRow], best: TrialRow | None) -> list[tuple[str, str]]:
    multi = len(directions) > 1
    counts = state_counts(rows)
    meta = [("study", study_name), ("storage", info.storage_shown),
            ("objective" + ("s" if multi else ""),
             ", ".join(f"{n} ({d})" for n, d in zip(names, directions, strict=True))),
            ("trials", ", ".join(f"{n} {STATE_WORDS.get(s, s.lower())}" for s, n in sorted(counts.items()))
             or "none")]
    if best is not None and not multi:
        meta.append(("best", f"{fmt(best.value, VALUE_DIGITS)} (trial {best.number}): "
                     + ", ".join(f"{k}={fmt(v, PARAM_DIGITS)}" for k, v in best.params.items())))
    if multi:
        meta.append(("Pareto front", f"{len(front)} trials"))
    return meta


@dataclass(frozen=True)
class ComparisonView:
    """The comparison's caption parts and its cells as text (``bold``: the row's best column)."""

    name: str
    direction: str
    row_key: str
    col_key: str
    over: str
    other: str
    cols: list[str]
    rows: list[tuple[str, list[tuple[str, bool]]]]


def _comparison_view(comp: Comparison, name: str) -> ComparisonView:
    over = (f"mean ± sample standard deviation over {comp.seeds} seeds (n = completed trials of the pair)"
            if comp.seeds > 1 else "one completed trial per pair, no seed repeated")
    other = (f" Other searched parameters ({', '.join(comp.varied)}): each pair shows its best setting of "
             "them, given in comparison.csv." if comp.varied else "")
    rows = []
    for r in comp.rows:
        best = comp.best_col(r)
        rows.append((r, [("" if (r, c) not in comp.cells else cell_text(comp.cells[r, c]), c == best)
                         for c in comp.cols]))
    return ComparisonView(name, comp.direction, comp.row_key, comp.col_key, over, other, list(comp.cols), rows)


def render_page(info: SweepInfo, study_name: str, rows: Sequence[TrialRow], directions: Sequence[str],
                names: Sequence[str], pictures: Sequence[Picture], comp_pics: Sequence[Picture],
                comp: Comparison | None, front: Sequence[TrialRow], best: TrialRow | None) -> str:
    """The HTML of ``report.html``."""
    sweep = info.sweep_dir
    multi = len(directions) > 1
    value_names = list(names) if multi else ["value"]
    files = [link(sweep, sweep / f, f) for f in ("trials.csv", "optimization_results.yaml", "multirun.yaml")
             if (sweep / f).is_file()]
    return _environment().get_template(TEMPLATE).render(
        study_name=study_name, meta=_meta(info, study_name, rows, directions, names, front, best), files=files,
        written=time.strftime("%Y-%m-%d %H:%M:%S"), sweep_dir=str(sweep), multi=multi,
        front=trials_view(sweep, front, value_names, {best.number} if best else ()) if front else None,
        search=[p for p in pictures if p not in comp_pics and p.file != "best_trial.png"],
        best_pictures=[p for p in pictures if p.file == "best_trial.png"],
        comparison=None if comp is None else _comparison_view(comp, names[0]), comp_pictures=list(comp_pics),
        keys=(ROW_KEY, COL_KEY), trials=trials_view(sweep, rows, value_names))
