"""The sweep report: pictures and tables of a sweep, from its Optuna study and its trials' run directories.

``python -m lightopt.report multirun/<date>/<time>`` builds it for any sweep directory; the sweeper builds it
at the end of every sweep (:func:`after_sweep`, stopped sweeps included, unless ``hydra.sweeper.report=false``).
Everything is written into the sweep directory:

=============================  ================================================================================
``report.html``                one page that opens offline (it refers only to the files below and to files of
                               the sweep directory): the study, every picture or why it is missing, the best
                               trials (or the Pareto front), the optimizer x schedule comparison, all trials
``history.png``                each trial's objective and the best so far; ``history_<k>.png`` for objective k
                               of a multi-objective sweep
``importances.png``            parameter importances (fANOVA; needs >= 2 varied parameters, 4 completed trials)
``parallel_coordinates.png``   the parameters of every completed trial, coloured by objective
``slice.png``                  the objective against each parameter
``intermediate_values.png``    the objective at each validation, pruned and completed trials told apart
``pareto_front.png``           multi-objective sweeps (2 or 3 objectives)
``best_trial.png``             the best trial's losses, validation metrics and learning rate (its metrics.csv)
``comparison.csv``,            when the sweep searched both ``optimizer`` and ``schedule``: the objective by
``comparison.png``,            optimizer x schedule (mean ± std over seeds), as a table and a heatmap, and the
``comparison_curves.png``      validation-loss curve of each optimizer with its best schedule
=============================  ================================================================================

The Optuna pictures come from ``optuna.visualization.matplotlib``; the curves are drawn from the runs'
``metrics.csv`` (the ``csv`` logger). The study is found from ``optimization_results.yaml`` (``study_name``,
``storage``) and ``multirun.yaml`` (the sweeper's configured ``storage``, whose password the results file
hides), the storage defaulting to ``sqlite:///<sweep dir>/optuna.db``. The table of the comparison is the pure
function :func:`comparison_table`. :func:`after_sweep` also logs the sweep as one W&B run (job type
``sweep-summary``, :func:`lightopt.tracking.log_sweep_summary`) when the sweep's trials logged to W&B.
"""

from __future__ import annotations

import contextlib
import csv
import html
import logging
import math
import secrets
import statistics
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXIT_NOT_A_SWEEP = 2
EXPECTED = ("a sweep directory written by `python train.py -m` (multirun/<date>/<time>/), holding "
            "optimization_results.yaml or multirun.yaml, and the study's optuna.db unless the sweep used "
            "hydra.sweeper.storage")
# every picture the report may write (stale ones from an earlier build are removed first)
PICTURES = ("history.png", "importances.png", "parallel_coordinates.png", "slice.png", "intermediate_values.png",
            "pareto_front.png", "best_trial.png", "comparison.png", "comparison_curves.png")
MIN_TRIALS_FOR_IMPORTANCES = 4
ROW_KEY, COL_KEY, SEED_KEY = "optimizer", "schedule", "seed"
DPI = 100
_STATE_WORDS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                "WAITING": "waiting"}


class NotASweepDir(ValueError):
    """The directory given to the report is not a sweep directory (the message says what is expected)."""


# ------------------------------------------------------------------------------------------------ trials


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report needs it (built from an Optuna ``FrozenTrial``, or by hand in tests)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: tuple[float, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    steps: int | None = None
    seconds: float | None = None
    status: str | None = None

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


def trial_rows(trials: Iterable[Any]) -> list[TrialRow]:
    """Report rows from Optuna trials (a pruned trial keeps its last intermediate value as Optuna does)."""
    rows = []
    for t in trials:
        seconds = t.user_attrs.get("wall_seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        rows.append(TrialRow(t.number, t.state.name, tuple(t.values) if t.values else None, dict(t.params),
                             t.user_attrs.get("run_dir"), t.user_attrs.get("global_step"), seconds,
                             t.user_attrs.get("status")))
    return rows


def _better(direction: str) -> Any:
    """A sort key putting the best value first for ``direction``."""
    return (lambda v: -v) if direction == "maximize" else (lambda v: v)


def _text(value: Any) -> str:
    """A parameter value as the sweep wrote it (``adam``, ``0.001``)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ------------------------------------------------------------------------------------------------ comparison


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
        key = _better(self.direction)
        return min(done, key=lambda cv: key(cv[1]))[0] if done else None


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return mean, None
    return mean, statistics.stdev(values)


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

    def axis(key: str) -> list[str]:
        seen = [_text(v) for v in order.get(key, ())]
        for t in finished:
            if _text(t.params[key]) not in seen:
                seen.append(_text(t.params[key]))
        present = {_text(t.params[key]) for t in finished}
        return [v for v in seen if v in present]

    rows, cols = axis(row_key), axis(col_key)
    fixed = {row_key, col_key, seed_key}
    varied = sorted({k for t in finished for k in t.params if k not in fixed
                     and len({_text(u.params.get(k)) for u in finished}) > 1})
    key = _better(direction)
    cells: dict[tuple[str, str], Cell] = {}
    seeds = 0
    for r in rows:
        for c in cols:
            pair = [t for t in finished if _text(t.params[row_key]) == r and _text(t.params[col_key]) == c]
            if not pair:
                continue
            cell = Cell(incomplete=sum(t.state != "COMPLETE" or t.value is None for t in pair))
            groups: dict[tuple[tuple[str, str], ...], list[TrialRow]] = {}
            for t in pair:
                if t.state == "COMPLETE" and t.value is not None and not math.isnan(t.value):
                    others = tuple(sorted((k, _text(v)) for k, v in t.params.items() if k not in fixed))
                    groups.setdefault(others, []).append(t)
            if groups:
                best = min(groups.values(), key=lambda g: (key(_mean_std([t.value for t in g])[0]), -len(g)))
                cell.mean, cell.std = _mean_std([t.value for t in best])  # type: ignore[misc]
                cell.n, cell.trials = len(best), [t.number for t in best]
                cell.others = {k: v for k, v in best[0].params.items() if k not in fixed}
                seeds = max(seeds, cell.n)
            cells[r, c] = cell
    return Comparison(row_key, col_key, rows, cols, cells, direction, seeds, varied)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def cell_text(cell: Cell | None) -> str:
    """``0.9123 ± 0.0042 (n=3)``, ``0.91`` for one value, ``-`` when nothing completed."""
    if cell is None or cell.mean is None:
        return "-" if cell is None or not cell.incomplete else f"- ({cell.incomplete} not completed)"
    text = _fmt(cell.mean)
    if cell.std is not None:
        text += f" ± {_fmt(cell.std, 2)}"
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
                                 *[_text(cell.others[k]) if k in cell.others else "" for k in comp.varied]])


# ------------------------------------------------------------------------------------------------ the study


@dataclass
class SweepInfo:
    """Where a sweep's study lives and what it optimized."""

    sweep_dir: Path
    study_name: str | None
    storage: str  # the URL to open
    storage_shown: str  # the same, password hidden
    objectives: list[str]
    config: Any = None  # multirun.yaml (the sweep's master config), or None


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path) if path.is_file() else None
    except Exception as err:  # noqa: BLE001 - a damaged file: the report says what it can without it
        log.warning("cannot read %s: %s", path, err)
        return None


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    if cfg is None:
        return None
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - e.g. an interpolation that only resolves inside Hydra
        return None
    if not OmegaConf.is_config(value):
        return value
    try:
        return OmegaConf.to_container(value, resolve=True)
    except Exception:  # noqa: BLE001 - the keys the report reads are plain; keep the rest unresolved
        return OmegaConf.to_container(value, resolve=False)


def sweep_info(sweep_dir: str | Path) -> SweepInfo:
    """Find the study of ``sweep_dir``; :class:`NotASweepDir` when it does not look like a sweep directory."""
    from lightopt.sweeper import _hide_password, with_driver

    path = Path(sweep_dir)
    if not path.is_dir():
        raise NotASweepDir(f"{path}: {'not a directory' if path.exists() else 'no such directory'}; "
                           f"expected {EXPECTED}")
    path = path.absolute()
    results = _load_yaml(path / "optimization_results.yaml")
    master = _load_yaml(path / "multirun.yaml")
    if results is None and master is None:
        raise NotASweepDir(f"{path}: no optimization_results.yaml or multirun.yaml in it; expected {EXPECTED}")
    configured = _select(master, "hydra.sweeper.storage")
    if configured:
        recorded = _select(results, "storage")
        storage = recorded if recorded and "***" not in str(recorded) else with_driver(str(configured))
    else:
        if not (path / "optuna.db").is_file():
            raise NotASweepDir(f"{path}: no optuna.db in it (the study of a sweep without "
                               f"hydra.sweeper.storage); expected {EXPECTED}")
        storage = f"sqlite:///{path / 'optuna.db'}"  # here, even if the directory was moved since
    name = _select(results, "study_name") or _select(master, "hydra.sweeper.study_name")
    objectives = _select(master, "hydra.sweeper.objectives") or [_select(master, "objective.metric") or "objective"]
    return SweepInfo(path, name, str(storage), _hide_password(str(storage)), [str(o) for o in objectives], master)


def load_study(info: SweepInfo) -> Any:
    """The sweep's Optuna study (the storage's only study when no name was recorded)."""
    import optuna

    from lightopt.sweeper import open_storage

    with _quiet_optuna():
        storage = open_storage(info.storage)
        names = [s.study_name for s in storage.get_all_studies()]
        name = info.study_name
        if name is None:
            if len(names) != 1:
                raise NotASweepDir(f"{info.sweep_dir}: no study_name in optimization_results.yaml and "
                                   f"{len(names)} studies in {info.storage_shown}; expected {EXPECTED}")
            name = info.study_name = names[0]
        if name not in names:
            raise NotASweepDir(f"{info.sweep_dir}: study {name!r} is not in {info.storage_shown} (it holds "
                               f"{names or 'no study'}); expected {EXPECTED}")
        return optuna.load_study(study_name=name, storage=storage)


# ------------------------------------------------------------------------------------------------ runs


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a CSV logger's ``metrics.csv`` as ``(step, value)`` pairs, in file order."""
    series: dict[str, list[tuple[int, float]]] = {}
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


def _run_dir(sweep_dir: Path, t: TrialRow) -> Path:
    """A trial's run directory: recorded, else ``<sweep dir>/<number>``; under this sweep dir if it was moved."""
    recorded = Path(t.run_dir) if t.run_dir else None
    if recorded is not None and recorded.is_dir():
        return recorded
    return sweep_dir / str(t.number)


def _mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean over runs at the steps every run has (runs of one setting over seeds share their steps)."""
    if len(curves) == 1:
        return list(curves[0])
    by_step = [dict(c) for c in curves]
    steps = sorted(set.intersection(*(set(d) for d in by_step)))
    return [(s, sum(d[s] for d in by_step) / len(by_step)) for s in steps]


# ------------------------------------------------------------------------------------------------ pictures


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's plots are flagged experimental and log about omitted trials: noise in a report."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    mpl_log = logging.getLogger("matplotlib")  # "Using categorical units ..." for choices like seeds
    mpl_level = mpl_log.level
    mpl_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        mpl_log.setLevel(mpl_level)


@contextlib.contextmanager
def _style() -> Iterator[Any]:
    """Optuna's ggplot style for every picture, without leaking rcParams (Optuna sets the style globally)."""
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(), plt.style.context("ggplot"):
        yield plt


def _save(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig = np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else getattr(axes, "figure", axes)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)


@dataclass
class Picture:
    """One section of the report: a written PNG, or the reason it is missing."""

    file: str  # the PNG's name in the sweep directory
    title: str
    caption: str = ""
    missing: str | None = None  # why it was not drawn

    @property
    def written(self) -> bool:
        return self.missing is None


class _Pictures:
    """Draws the report's pictures into the sweep directory, recording each one or why it is missing."""

    def __init__(self, sweep_dir: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # files only, before pyplot picks a GUI backend
        self.sweep_dir = sweep_dir
        self.pictures: list[Picture] = []

    def draw(self, file: str, title: str, caption: str, missing: str | None, draw: Any) -> Picture:
        picture = Picture(file, title, caption, missing)
        if missing is None:
            import matplotlib.pyplot as plt

            path = self.sweep_dir / file
            before = set(plt.get_fignums())
            try:
                with _quiet_optuna(), _style():
                    _save(draw(), path)
            except Exception as err:  # noqa: BLE001 - one picture failing leaves the rest of the report
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                path.unlink(missing_ok=True)
                if "zero total variance" in str(err):  # fANOVA: nothing to attribute
                    picture.missing = "the objective has the same value in every completed trial"
                else:
                    log.warning("report: %s could not be drawn: %s: %s", file, type(err).__name__, err)
                    picture.missing = f"drawing it failed ({type(err).__name__}: {str(err).splitlines()[0][:300]})"
        self.pictures.append(picture)
        return picture


def _varied_params(trials: Sequence[Any]) -> list[str]:
    """Parameters that every given trial has and that take more than one value among them."""
    import optuna

    space = optuna.search_space.intersection_search_space(trials) if trials else {}
    return [name for name in space if len({_text(t.params[name]) for t in trials}) > 1]


def _optuna_pictures(pics: _Pictures, study: Any, info: SweepInfo) -> None:
    import optuna
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    names = info.objectives if len(info.objectives) == len(study.directions) else [
        f"objective {i + 1}" for i in range(len(study.directions))]
    params = sorted({p for t in complete for p in t.params})
    none_complete = "no trial completed yet" if not complete else None
    no_params = "no parameter was searched" if complete and not params else None

    def target(i: int) -> dict[str, Any]:
        return {"target": (lambda t: t.values[i]), "target_name": names[i]} if multi else {"target_name": names[0]}

    for i, name in enumerate(names):
        file = "history.png" if i == 0 else f"history_{i + 1}.png"
        caption = (f"{name} of every completed trial in the order they ran, and the best so far."
                   if not multi else f"{name} (objective {i + 1} of {len(names)}) of every completed trial; "
                   "a multi-objective sweep has no single best so far (see the Pareto front).")
        pics.draw(file, f"Optimisation history: {name}", caption, none_complete,
                  lambda i=i: vis.plot_optimization_history(study, **target(i)))

    varied = _varied_params(complete)
    missing = none_complete or no_params
    if missing is None and len(varied) < 2:
        missing = (f"importances need at least 2 parameters that vary across completed trials; "
                   f"this sweep has {len(varied)}{' (' + ', '.join(varied) + ')' if varied else ''}")
    if missing is None and len(complete) < MIN_TRIALS_FOR_IMPORTANCES:
        missing = (f"importances need at least {MIN_TRIALS_FOR_IMPORTANCES} completed trials; "
                   f"{len(complete)} completed")
    pics.draw("importances.png", "Parameter importances",
              "Share of the objective's variance each parameter explains (fANOVA over the completed trials).",
              missing, lambda: vis.plot_param_importances(
                  study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                  **({} if multi else {"target_name": names[0]})))

    first = f" ({names[0]})" if multi else ""
    pics.draw("parallel_coordinates.png", "Parallel coordinates",
              f"Each line is a completed trial through its parameter values, coloured by its objective{first}.",
              none_complete or no_params or (None if len(complete) >= 2 else "needs at least 2 completed trials"),
              lambda: vis.plot_parallel_coordinate(study, **target(0)))
    pics.draw("slice.png", "Slice plots", f"The objective{first} against each parameter, one point per "
              "completed trial (darker = later).", none_complete or no_params,
              lambda: vis.plot_slice(study, **target(0)))

    reported = [t for t in trials if t.intermediate_values]
    missing = ("a multi-objective study has no intermediate values (its trials are not pruned)" if multi else
               None if reported else "no trial reported intermediate values")
    pics.draw("intermediate_values.png", "Intermediate values",
              f"{names[0]} at each validation (by optimizer step), completed and pruned trials told apart.",
              missing, lambda: _intermediate(study, trials, names[0]))

    if multi:
        missing = (none_complete or (None if len(names) in (2, 3) else
                   f"a Pareto-front plot shows 2 or 3 objectives; this sweep has {len(names)}"))
    else:
        missing = "a single-objective sweep has no Pareto front"
    pics.draw("pareto_front.png", "Pareto front", "Every completed trial by its objectives; the Pareto-optimal "
              "ones are highlighted.", missing,
              lambda: vis.plot_pareto_front(study, target_names=names))


def _intermediate(study: Any, trials: Sequence[Any], name: str) -> Any:
    """Optuna's intermediate-values plot, its lines recoloured by trial state (one legend entry per state)."""
    import optuna.visualization.matplotlib as vis
    from matplotlib.lines import Line2D

    ax = vis.plot_intermediate_values(study)
    state = {f"Trial{t.number}": t.state.name for t in trials}
    styles = {"COMPLETE": ("tab:blue", "-"), "PRUNED": ("tab:red", "--"), "FAIL": ("0.5", ":"),
              "RUNNING": ("tab:green", "-.")}
    counts: dict[str, int] = {}
    for line in ax.get_lines():
        s = state.get(str(line.get_label()), "FAIL")
        color, style = styles.get(s, styles["FAIL"])
        line.set_color(color)
        line.set_linestyle(style)
        counts[s] = counts.get(s, 0) + 1
    handles = [Line2D([], [], color=styles[s][0], linestyle=styles[s][1], marker=".",
                      label=f"{_STATE_WORDS[s]} ({counts[s]})") for s in styles if s in counts]
    ax.legend(handles=handles, loc="best")
    ax.set_ylabel(name)
    return ax


def _curves_figure(plt: Any, series: Mapping[str, list[tuple[int, float]]], title: str) -> Any:
    """The losses, the other validation metrics and the learning rate of one run, side by side."""
    losses = [k for k in series if k.endswith("loss")]
    metrics = [k for k in series if k.startswith("val/") and k not in losses]
    lrs = [k for k in series if k.split("/")[-1] == "lr" or k.startswith("lr-")]
    panels = [(p, label) for p, label in ((losses, "loss"), (metrics, "validation metric"), (lrs, "learning rate"))
              if p]
    if not panels:
        raise ValueError("metrics.csv has no loss, validation metric or learning rate")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (names, label) in zip(axes[0], panels, strict=True):
        for name in names:
            steps, values = zip(*series[name], strict=True)
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        if label == "learning rate":
            positive = [v for n in names for _, v in series[n] if v > 0]
            if positive and max(positive) / min(positive) > 100:
                ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _best_row(rows: Sequence[TrialRow], directions: Sequence[str]) -> TrialRow | None:
    done = [t for t in rows if t.state == "COMPLETE" and t.values]
    if not done:
        return None
    key = _better(directions[0])
    return min(done, key=lambda t: (key(t.values[0]), t.number))  # type: ignore[index]


def _best_curves(pics: _Pictures, sweep_dir: Path, best: TrialRow | None, multi: bool, name: str) -> None:
    missing = None
    series: dict[str, list[tuple[int, float]]] = {}
    if best is None:
        missing = "no trial completed yet"
    else:
        path = _run_dir(sweep_dir, best) / "metrics.csv"
        series = read_metrics(path)
        if not path.is_file():
            missing = (f"trial {best.number} has no metrics.csv (in {path.parent}); the curves come from the csv "
                       "logger: add it, e.g. logger=[csv,wandb]")
        elif not series:
            missing = f"{path} holds no metric"
    which = "of the Pareto front with the best first objective" if multi else ""
    title = f"trial {best.number}{' ' + which if which else ''}: training curves" if best else ""
    pics.draw("best_trial.png", "Best trial: training curves",
              (f"Trial {best.number}{' (' + which + ')' if which else ''}, {name} = {_fmt(best.value)}: its "
               "losses, validation metrics and learning rate by optimizer step (from its metrics.csv).")
              if best else "", missing, lambda: _with_plt(lambda plt: _curves_figure(plt, series, title)))


def _with_plt(draw: Any) -> Any:
    import matplotlib.pyplot as plt

    return draw(plt)


def _comparison_pictures(pics: _Pictures, sweep_dir: Path, comp: Comparison, rows: Sequence[TrialRow],
                         name: str) -> None:
    def heatmap(plt: Any) -> Any:
        import numpy as np

        grid = np.full((len(comp.rows), len(comp.cols)), np.nan)
        for (r, c), cell in comp.cells.items():
            if cell.mean is not None and math.isfinite(cell.mean):
                grid[comp.rows.index(r), comp.cols.index(c)] = cell.mean
        fig, ax = plt.subplots(figsize=(1.6 * len(comp.cols) + 2.5, 0.7 * len(comp.rows) + 1.8))
        ax.grid(False)
        cmap = plt.get_cmap("viridis" if comp.direction == "maximize" else "viridis_r").copy()
        cmap.set_bad("0.85")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i, r in enumerate(comp.rows):
            for j, c in enumerate(comp.cols):
                cell = comp.cells.get((r, c))
                text = "not run" if cell is None else cell_text(cell).replace(" (", "\n(")
                bright = np.isfinite(grid[i, j]) and ((grid[i, j] > middle) == (comp.direction == "maximize"))
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if bright else "white"
                        if np.isfinite(grid[i, j]) else "black")
        ax.set_xticks(range(len(comp.cols)), comp.cols)
        ax.set_yticks(range(len(comp.rows)), comp.rows)
        ax.set_xlabel(comp.col_key)
        ax.set_ylabel(comp.row_key)
        fig.colorbar(image, ax=ax, label=f"{name} ({'higher' if comp.direction == 'maximize' else 'lower'} "
                     "is better)")
        ax.set_title(f"{name} by {comp.row_key} and {comp.col_key}"
                     + (f", mean over {comp.seeds} seeds" if comp.seeds > 1 else ""))
        fig.tight_layout()
        return fig

    drawable = any(c.mean is not None and math.isfinite(c.mean) for c in comp.cells.values())
    pics.draw("comparison.png", f"{comp.row_key} x {comp.col_key}: heatmap",
              "The table above as colours.", None if drawable else "no pair has a completed trial",
              lambda: _with_plt(heatmap))

    by_number = {t.number: t for t in rows}
    runs: list[tuple[str, str, list[dict[str, list[tuple[int, float]]]]]] = []
    for r in comp.rows:
        c = comp.best_col(r)
        if c is not None:
            runs.append((r, c, [read_metrics(_run_dir(sweep_dir, by_number[n]) / "metrics.csv")
                                for n in comp.cells[r, c].trials]))
    # val/loss, or the objective when the runs log no val/loss
    metric = "val/loss" if any("val/loss" in s for _, _, ss in runs for s in ss) else name
    lines: list[tuple[str, list[tuple[int, float]]]] = []
    for r, c, ss in runs:
        curves = [s[metric] for s in ss if s.get(metric)]
        if curves:
            label = f"{r} ({c})" + (f", mean of {len(curves)}" if len(curves) > 1 else "")
            lines.append((label, _mean_curve(curves)))

    def curves_plot(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, points in lines:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} of each {comp.row_key} with its best {comp.col_key}")
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        return fig

    pics.draw("comparison_curves.png", f"{metric} by {comp.row_key} (its best {comp.col_key})",
              f"The {metric} curve of each {comp.row_key} with the {comp.col_key} of its best mean "
              "(averaged over the seeds of that pair), from the runs' metrics.csv.",
              None if lines else "no run of a best pair has a metrics.csv with val/loss (add the csv logger)",
              lambda: _with_plt(curves_plot))


# ------------------------------------------------------------------------------------------------ the page


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#8a5a00;background:#fff6e0;padding:.5em 1em;border-left:4px solid #e0a000}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.meta td:first-child{font-weight:600}.best{background:#eef8ee}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _link(sweep_dir: Path, target: Path, text: str) -> str:
    """A relative link to a file of the sweep directory; plain text for anything else or a missing file."""
    try:
        rel = target.resolve().relative_to(sweep_dir.resolve())
    except (ValueError, OSError):
        return _e(text)
    if not target.is_file():
        return _e(text)
    return f'<a href="{_e(rel.as_posix())}">{_e(text)}</a>'


def _trials_table(sweep_dir: Path, rows: Sequence[TrialRow], value_names: Sequence[str], params: Sequence[str],
                  highlight: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = ["#", "state", *value_names, *params, "steps", "seconds", "status", "run"]
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for t in rows:
        values = list(t.values) if t.values else [None] * len(value_names)
        run = _run_dir(sweep_dir, t)
        cells = [f'<td class="num">{t.number}</td>', f"<td>{_e(t.state)}</td>",
                 *[f'<td class="num">{_e(_fmt(v, 6))}</td>' for v in values],
                 *[f"<td>{_e(_text(t.params[p])) if p in t.params else ''}</td>" for p in params],
                 f'<td class="num">{_e("" if t.steps is None else t.steps)}</td>',
                 f'<td class="num">{_e("" if t.seconds is None else t.seconds)}</td>',
                 f"<td>{_e(t.status or '')}</td>",
                 f"<td>{_link(sweep_dir, run / 'results.json', 'results.json')}</td>"]
        cls = ' class="best"' if t.number in highlight else ""
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _picture_html(p: Picture) -> str:
    if p.missing is not None:
        return f'<h3>{_e(p.title)}</h3><p class="missing">Not drawn: {_e(p.missing)}.</p>'
    return (f'<h3>{_e(p.title)}</h3><figure><img src="{_e(p.file)}" alt="{_e(p.title)}">'
            f"<figcaption>{_e(p.caption)}</figcaption></figure>")


def _comparison_html(comp: Comparison | None, name: str, pics: Sequence[Picture]) -> str:
    if comp is None:
        return (f"<p>Shown when a sweep searches both <code>{ROW_KEY}</code> and <code>{COL_KEY}</code> "
                "(e.g. <code>python train.py -m search=optimizer_schedule</code>); this one did not.</p>")
    over = (f"mean ± sample standard deviation over {comp.seeds} seeds (n = completed trials of the pair)"
            if comp.seeds > 1 else "one completed trial per pair, no seed repeated")
    other = (f" Other searched parameters ({', '.join(comp.varied)}): each pair shows its best setting of "
             "them, given in comparison.csv." if comp.varied else "")
    out = [f"<p>{_e(name)} ({_e(comp.direction)}) by {_e(comp.row_key)} (rows) and {_e(comp.col_key)} "
           f"(columns): {_e(over)}; the best {_e(comp.col_key)} of each row in bold; “-” = no completed trial, "
           f"empty = not run.{_e(other)} Also in <a href=\"comparison.csv\">comparison.csv</a>.</p>",
           "<table><tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in comp.cols) + "</tr>"]
    for r in comp.rows:
        best = comp.best_col(r)
        tds = []
        for c in comp.cols:
            cell = comp.cells.get((r, c))
            text = "" if cell is None else _e(cell_text(cell))
            tds.append(f'<td class="num">{"<b>" + text + "</b>" if c == best else text}</td>')
        out.append(f"<tr><th>{_e(r)}</th>{''.join(tds)}</tr>")
    out.append("</table>")
    out += [_picture_html(p) for p in pics]
    return "\n".join(out)


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
    from the sweep's storage. Raises :class:`NotASweepDir` for a directory that is not a sweep directory.
    """
    return make_report(sweep_dir, study).html


def make_report(sweep_dir: str | Path, study: Any = None) -> Report:
    """:func:`build_report`, returning everything it wrote (for the W&B sweep summary)."""
    start = time.perf_counter()
    info = sweep_info(sweep_dir)
    if study is None:
        study = load_study(info)
    else:
        info.study_name = study.study_name
    sweep = info.sweep_dir
    for name in [*PICTURES, *(p.name for p in sweep.glob("history_*.png"))]:
        (sweep / name).unlink(missing_ok=True)
    (sweep / "comparison.csv").unlink(missing_ok=True)

    with _quiet_optuna():
        frozen = study.get_trials(deepcopy=False)
        directions = [d.name.lower() for d in study.directions]
        best_trials = study.best_trials if len(directions) > 1 and any(
            t.state.name == "COMPLETE" for t in frozen) else []
    rows = trial_rows(frozen)
    multi = len(directions) > 1
    names = info.objectives if len(info.objectives) == len(directions) else [
        f"objective {i + 1}" for i in range(len(directions))]
    pics = _Pictures(sweep)
    _optuna_pictures(pics, study, info)
    best = _best_row([t for t in rows if t.number in {b.number for b in best_trials}] if multi else rows, directions)
    _best_curves(pics, sweep, best, multi, names[0])

    order = {k: list(d.choices) for t in frozen for k, d in t.distributions.items() if hasattr(d, "choices")}
    comp = comparison_table(rows, directions[0], order=order)
    comp_pics: list[Picture] = []
    if comp is not None:
        write_comparison_csv(sweep / "comparison.csv", comp)
        before = len(pics.pictures)
        _comparison_pictures(pics, sweep, comp, rows, names[0])
        comp_pics = pics.pictures[before:]

    if multi:
        front = sorted((t for t in rows if t.number in {b.number for b in best_trials}), key=lambda t: t.number)
    else:
        key = _better(directions[0])
        front = sorted((t for t in rows if t.state == "COMPLETE" and t.value is not None),
                       key=lambda t: (key(t.value), t.number))[:10]  # type: ignore[arg-type]
    page = _page(info, study.study_name, rows, directions, names, pics.pictures, comp_pics, comp, front, best)
    path = sweep / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    seconds = time.perf_counter() - start
    log.info("sweep report: %s (%.1f s)", path, seconds)
    return Report(path, pics.pictures, rows, info, directions, [best] if not multi and best else front, comp,
                  seconds, study)


def _page(info: SweepInfo, study_name: str, rows: Sequence[TrialRow], directions: Sequence[str],
          names: Sequence[str], pictures: Sequence[Picture], comp_pics: Sequence[Picture],
          comp: Comparison | None, front: Sequence[TrialRow], best: TrialRow | None) -> str:
    sweep = info.sweep_dir
    counts: dict[str, int] = {}
    for t in rows:
        counts[t.state] = counts.get(t.state, 0) + 1
    params: list[str] = []
    for t in rows:
        params += [p for p in t.params if p not in params]
    multi = len(directions) > 1
    value_names = list(names) if multi else ["value"]
    files = " · ".join(_link(sweep, sweep / f, f) for f in ("trials.csv", "optimization_results.yaml",
                                                               "multirun.yaml") if (sweep / f).is_file())
    meta = [("study", study_name), ("storage", info.storage_shown),
            ("objective" + ("s" if multi else ""), ", ".join(f"{n} ({d})" for n, d in zip(names, directions,
                                                                                         strict=True))),
            ("trials", ", ".join(f"{n} {_STATE_WORDS.get(s, s.lower())}" for s, n in sorted(counts.items()))
             or "none")]
    if best is not None and not multi:
        meta.append(("best", f"{_fmt(best.value, 6)} (trial {best.number}): "
                     + ", ".join(f"{k}={_text(v)}" for k, v in best.params.items())))
    if multi:
        meta.append(("Pareto front", f"{len(front)} trials"))
    body = [f"<h1>Sweep report: {_e(study_name)}</h1>",
            '<table class="meta">' + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta)
            + (f"<tr><td>files</td><td>{files}</td></tr>" if files else "") + "</table>",
            f"<p>Written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}; rebuild it with <code>python -m "
            f"lightopt.report {_e(sweep)}</code>.</p>"]
    body.append(f"<h2>{'Pareto front' if multi else 'Best trials'}</h2>")
    if front:
        body.append(_trials_table(sweep, front, value_names, params, {best.number} if best else set()))
    else:
        body.append('<p class="missing">No trial completed yet.</p>')
    body.append("<h2>Search</h2>")
    body += [_picture_html(p) for p in pictures if p not in comp_pics and p.file != "best_trial.png"]
    body.append("<h2>Best trial</h2>")
    body += [_picture_html(p) for p in pictures if p.file == "best_trial.png"]
    body.append(f"<h2>Optimizer comparison</h2>{_comparison_html(comp, names[0], comp_pics)}")
    body.append(f"<h2>All trials</h2><details><summary>{len(rows)} trials</summary>"
                f"{_trials_table(sweep, rows, value_names, params)}</details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Sweep report: {_e(study_name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------------------------------------ after a sweep


def wandb_settings(configs: Iterable[Any]) -> dict[str, Any] | None:
    """The W&B logger section (``project``, ``entity``, ``mode``...) of the first config that logs to W&B.

    ``configs`` are task configs (the sweep's master config, the trials' composed configs); None when none
    of them has a W&B logger or its mode resolves to ``disabled``.
    """
    from omegaconf import OmegaConf

    from lightopt import tracking

    for cfg in configs:
        loggers = _select(cfg, "logger") if OmegaConf.is_config(cfg) else (cfg or {}).get("logger")
        for section in (loggers or {}).values():
            if not isinstance(section, Mapping):
                continue
            target = str(section.get("_target_", ""))
            if not (target.endswith("wandb_logger") or target.endswith("WandbLogger")):
                continue
            mode = "offline" if section.get("offline") else str(section.get("mode") or "auto")
            try:
                if tracking.resolve_mode(mode) == "disabled":
                    continue
            except Exception:  # noqa: BLE001 - a bad mode already failed the trials
                continue
            return {**section, "mode": mode}
    return None


#: study user attribute holding the id of the sweep's W&B summary run
SUMMARY_RUN_ID_ATTR = "wandb_summary_run_id"


def log_to_wandb(report: Report, settings: Mapping[str, Any]) -> Path | None:
    """The sweep as one W&B run (job type ``sweep-summary``, group = study name): trials table, pictures."""
    from lightopt import tracking

    rows, directions = report.rows, report.directions
    names = report.info.objectives if len(report.info.objectives) == len(directions) else [
        f"objective_{i + 1}" for i in range(len(directions))]
    value_cols = ["value"] if len(directions) == 1 else [f"value_{n}" for n in names]
    params: list[str] = []
    for t in rows:
        params += [p for p in t.params if p not in params]
    columns = ["number", "state", *value_cols, *params, "steps", "seconds", "status"]
    data = [[t.number, t.state, *(list(t.values) if t.values else [None] * len(value_cols)),
             *[t.params.get(p) for p in params], t.steps, t.seconds, t.status] for t in rows]
    counts: dict[str, int] = {}
    for t in rows:
        counts[t.state] = counts.get(t.state, 0) + 1
    summary: dict[str, Any] = {"study_name": report.info.study_name, "storage": report.info.storage_shown,
                               "n_trials": len(rows), "states": counts, "directions": directions,
                               "objectives": names}
    if len(directions) == 1 and report.best:
        best = report.best[0]
        summary |= {"best_value": best.value, "best_params": dict(best.params), "best_trial": best.number}
    elif report.best:
        summary["pareto_front"] = [{"number": t.number, "values": list(t.values or ()), "params": dict(t.params)}
                                   for t in report.best]
    # one summary run per study: a rerun of the sweep (a resume, a rebuilt report) updates the same W&B run
    run_id = report.study.user_attrs.get(SUMMARY_RUN_ID_ATTR)
    if not run_id:
        run_id = secrets.token_hex(8)
        report.study.set_user_attr(SUMMARY_RUN_ID_ATTR, run_id)
    return tracking.log_sweep_summary(
        report.info.sweep_dir, group=str(report.info.study_name), columns=columns, rows=data,
        images=report.images, summary=summary, project=settings.get("project") or "lightopt",
        entity=settings.get("entity"), mode=str(settings.get("mode") or "auto"),
        tags=list(settings.get("tags") or []), run_id=run_id)


def after_sweep(sweep_dir: str | Path, study: Any = None, configs: Iterable[Any] = ()) -> Path | None:
    """What the sweeper does when a sweep ends: build the report, then log it to W&B if the trials used W&B.

    Never raises (a sweep that ran is not failed by its report): problems become a warning naming the
    command that retries. Returns the report's path, or None when it could not be built.
    """
    retry = f"build it again with: python -m lightopt.report {sweep_dir}"
    try:
        report = make_report(sweep_dir, study)
    except KeyboardInterrupt:
        log.warning("sweep report interrupted; %s", retry)
        return None
    except Exception as err:  # noqa: BLE001
        log.warning("the sweep report could not be built (%s: %s); %s", type(err).__name__, err, retry)
        return None
    try:
        settings = wandb_settings(configs)
        if settings is not None:
            log_to_wandb(report, settings)
    except KeyboardInterrupt:
        log.warning("the W&B sweep summary was interrupted")
    except Exception as err:  # noqa: BLE001
        log.warning("the W&B sweep summary could not be logged (%s: %s)", type(err).__name__, err)
    return report.html


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lightopt.report SWEEP_DIR``: build the report; exit 2 for a directory that is not a sweep's."""
    import argparse

    from lightopt.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m lightopt.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. multirun/2024-05-01/12-00-00")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_report(args.sweep_dir)
    except NotASweepDir as err:
        print(f"lightopt: report: {err}", file=sys.stderr, flush=True)
        return EXIT_NOT_A_SWEEP
    except ConfigError as err:  # the sweep's storage cannot be opened (a database server down, say)
        print(f"lightopt: report: cannot open the study of {args.sweep_dir}: {err}", file=sys.stderr, flush=True)
        return EXIT_NOT_A_SWEEP
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
