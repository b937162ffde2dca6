"""A sweep's trials as one table: the rows and columns that ``trials.csv``, the console summary, ``report.html``
and the W&B sweep summary all show. How each of them lays the table out lives with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the columns after the values and the parameters
TAIL_COLUMNS = ("steps", "seconds", "status", "run_dir")


@dataclass(frozen=True)
class TrialRow:
    """One trial (built from an Optuna ``FrozenTrial`` by :func:`trial_rows`, or by hand in tests)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: tuple[float, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    steps: int | None = None
    seconds: float | None = None
    status: str | None = None
    cv_std: float | None = None  # a cross-validated trial's standard deviation over its folds

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None

    def cell(self, column: str) -> Any:
        """The raw value of one of :data:`TAIL_COLUMNS`, ``number`` or ``state``."""
        return getattr(self, column)


def trial_rows(trials: Iterable[Any]) -> list[TrialRow]:
    """Rows from Optuna trials (a pruned trial keeps its last intermediate value, as Optuna does)."""
    rows = []
    for t in trials:
        seconds = t.user_attrs.get("wall_seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        rows.append(TrialRow(t.number, t.state.name, tuple(t.values) if t.values else None, dict(t.params),
                             t.user_attrs.get("run_dir"), t.user_attrs.get("global_step"), seconds,
                             t.user_attrs.get("status"), t.user_attrs.get("cv_std")))
    return rows


def value_columns(n_objectives: int, objectives: Sequence[str] | None = None) -> list[str]:
    """``value`` for one objective, ``value_<name>`` (``value_0``, ... without names) for several."""
    if n_objectives == 1:
        return ["value"]
    names = list(objectives) if objectives and len(objectives) == n_objectives else [
        str(i) for i in range(n_objectives)]
    return [f"value_{n}" for n in names]


def param_columns(rows: Iterable[TrialRow], first: Sequence[str] = ()) -> list[str]:
    """Every parameter of the rows, ``first`` (the search space's order) first, then in order of appearance."""
    names = list(first)
    for t in rows:
        names += [n for n in t.params if n not in names]
    return names


@dataclass(frozen=True)
class TableLayout:
    """The columns of a trial table: ``number``, ``state``, the values, ``cv_std`` for a cross-validated sweep,
    the parameters, :data:`TAIL_COLUMNS`."""

    values: list[str]
    spread: list[str]  # ["cv_std"] for a cross-validated sweep, else empty
    params: list[str]

    @property
    def columns(self) -> list[str]:
        return ["number", "state", *self.values, *self.spread, *self.params, *TAIL_COLUMNS]

    def cells(self, t: TrialRow) -> list[Any]:
        """The row's raw cells under :attr:`columns`; missing values and parameters are None."""
        values = list(t.values) if t.values else [None] * len(self.values)
        return [t.number, t.state, *values, *[t.cv_std for _ in self.spread], *[t.params.get(p) for p in self.params],
                *[t.cell(c) for c in TAIL_COLUMNS]]


def table_layout(rows: Sequence[TrialRow], n_objectives: int, objectives: Sequence[str] | None = None,
                 first_params: Sequence[str] = ()) -> TableLayout:
    spread = ["cv_std"] if any(t.cv_std is not None for t in rows) else []
    return TableLayout(value_columns(n_objectives, objectives), spread, param_columns(rows, first_params))


@dataclass(frozen=True)
class TrialTable:
    """``columns`` (see :class:`TableLayout`) and raw rows."""

    columns: list[str]
    values: list[str]
    params: list[str]
    rows: list[list[Any]]
    spread: list[str] = field(default_factory=list)  # ["cv_std"] for a cross-validated sweep, else empty

    def select(self, columns: Sequence[str]) -> list[list[Any]]:
        """The rows restricted to ``columns``, in that order."""
        index = [self.columns.index(c) for c in columns]
        return [[row[i] for i in index] for row in self.rows]


def trial_table(rows: Sequence[TrialRow], n_objectives: int, objectives: Sequence[str] | None = None,
                first_params: Sequence[str] = ()) -> TrialTable:
    """The table of ``rows``: missing values and parameters are None."""
    layout = table_layout(rows, n_objectives, objectives, first_params)
    return TrialTable(layout.columns, layout.values, layout.params, [layout.cells(t) for t in rows], layout.spread)


def state_counts(rows: Iterable[TrialRow]) -> dict[str, int]:
    """How many trials are in each state, e.g. ``{"COMPLETE": 18, "PRUNED": 2}``."""
    counts: dict[str, int] = {}
    for t in rows:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts
