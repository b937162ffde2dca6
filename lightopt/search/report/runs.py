"""A trial's run as the report reads it: its run directory (:func:`run_dir`) and the curves of its
``metrics.csv`` (the ``csv`` logger). Drawing them is :mod:`lightopt.search.report.pictures`' job."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Sequence
from pathlib import Path

from lightopt.search.trials import TrialRow

Curve = list[tuple[int, float]]  # (optimizer step, value) pairs


def read_metrics(path: Path) -> dict[str, Curve]:
    """Every metric of a CSV logger's ``metrics.csv`` as ``(step, value)`` pairs, in file order."""
    series: dict[str, Curve] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or ""))
                except ValueError:
                    continue
                for name, text in row.items():
                    if name in ("step", "epoch") or not text:
                        continue
                    with contextlib.suppress(ValueError):
                        series.setdefault(name, []).append((step, float(text)))
    except OSError:
        return {}
    return series


def run_dir(sweep_dir: Path, t: TrialRow) -> Path:
    """A trial's run directory: recorded, else ``<sweep dir>/<number>``; under this sweep dir if it was moved."""
    recorded = Path(t.run_dir) if t.run_dir else None
    if recorded is not None and recorded.is_dir():
        return recorded
    return sweep_dir / str(t.number)


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The mean over runs at the steps every run has (runs of one setting over seeds share their steps)."""
    if len(curves) == 1:
        return list(curves[0])
    by_step = [dict(c) for c in curves]
    steps = sorted(set.intersection(*(set(d) for d in by_step)))
    return [(s, sum(d[s] for d in by_step) / len(by_step)) for s in steps]
