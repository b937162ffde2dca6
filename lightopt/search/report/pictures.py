"""The report's pictures: each PNG it may write into the sweep directory (:data:`PICTURES`), drawn with
Optuna's matplotlib plots (history, importances, parallel coordinates, slices, intermediate values, Pareto
front) or from the runs' ``metrics.csv`` (the best trial's curves, the comparison's heatmap and curves).
A picture that cannot be drawn becomes a :class:`Picture` saying why; laying them out is the page's job."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt.formatting import fmt
from lightopt.search.report.comparison import PARAM_DIGITS, Comparison, cell_text
from lightopt.search.report.runs import Curve, mean_curve, read_metrics, run_dir
from lightopt.search.report.study import SweepInfo, quiet_optuna
from lightopt.search.trials import TrialRow

log = logging.getLogger(__name__)

# every picture the report may write (stale ones from an earlier build are removed first)
PICTURES = ("history.png", "importances.png", "parallel_coordinates.png", "slice.png", "intermediate_values.png",
            "pareto_front.png", "best_trial.png", "comparison.png", "comparison_curves.png")
MIN_TRIALS_FOR_IMPORTANCES = 4
DPI = 100
STATE_WORDS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
               "WAITING": "waiting"}


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


def _with_plt(draw: Callable[[Any], Any]) -> Any:
    import matplotlib.pyplot as plt

    return draw(plt)


class Pictures:
    """Draws the report's pictures into the sweep directory, recording each one or why it is missing."""

    def __init__(self, sweep_dir: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # files only, before pyplot picks a GUI backend
        self.sweep_dir = sweep_dir
        self.pictures: list[Picture] = []

    def draw(self, file: str, title: str, caption: str, missing: str | None, draw: Callable[[], Any]) -> Picture:
        picture = Picture(file, title, caption, missing)
        if missing is None:
            import matplotlib.pyplot as plt

            path = self.sweep_dir / file
            before = set(plt.get_fignums())
            try:
                with quiet_optuna(), _style():
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


# ------------------------------------------------------------------------------------------------ Optuna's


def _varied_params(trials: Sequence[Any]) -> list[str]:
    """Parameters that every given trial has and that take more than one value among them."""
    import optuna

    space = optuna.search_space.intersection_search_space(trials) if trials else {}
    return [name for name in space if len({fmt(t.params[name], PARAM_DIGITS) for t in trials}) > 1]


class _Study:
    """What the Optuna pictures need to know about the study."""

    def __init__(self, study: Any, info: SweepInfo) -> None:
        from optuna.trial import TrialState

        self.study = study
        self.trials = study.get_trials(deepcopy=False)
        self.complete = [t for t in self.trials if t.state == TrialState.COMPLETE]
        self.multi = len(study.directions) > 1
        self.names = info.objective_names(len(study.directions))
        self.none_complete = "no trial completed yet" if not self.complete else None
        params = {p for t in self.complete for p in t.params}
        self.no_params = "no parameter was searched" if self.complete and not params else None

    def target(self, i: int) -> dict[str, Any]:
        """Optuna's ``target``/``target_name`` arguments for objective ``i``."""
        if not self.multi:
            return {"target_name": self.names[0]}
        return {"target": (lambda t: t.values[i]), "target_name": self.names[i]}


def optuna_pictures(pics: Pictures, study: Any, info: SweepInfo) -> None:
    """History, importances, parallel coordinates, slices, intermediate values and the Pareto front."""
    import optuna.visualization.matplotlib as vis

    s = _Study(study, info)
    for i, name in enumerate(s.names):
        file = "history.png" if i == 0 else f"history_{i + 1}.png"
        caption = (f"{name} of every completed trial in the order they ran, and the best so far."
                   if not s.multi else f"{name} (objective {i + 1} of {len(s.names)}) of every completed trial; "
                   "a multi-objective sweep has no single best so far (see the Pareto front).")
        pics.draw(file, f"Optimisation history: {name}", caption, s.none_complete,
                  lambda i=i: vis.plot_optimization_history(study, **s.target(i)))
    _importances(pics, s)
    first = f" ({s.names[0]})" if s.multi else ""
    pics.draw("parallel_coordinates.png", "Parallel coordinates",
              f"Each line is a completed trial through its parameter values, coloured by its objective{first}.",
              s.none_complete or s.no_params or (None if len(s.complete) >= 2 else "needs at least 2 completed trials"),
              lambda: vis.plot_parallel_coordinate(study, **s.target(0)))
    pics.draw("slice.png", "Slice plots", f"The objective{first} against each parameter, one point per "
              "completed trial (darker = later).", s.none_complete or s.no_params,
              lambda: vis.plot_slice(study, **s.target(0)))
    reported = [t for t in s.trials if t.intermediate_values]
    missing = ("a multi-objective study has no intermediate values (its trials are not pruned)" if s.multi else
               None if reported else "no trial reported intermediate values")
    pics.draw("intermediate_values.png", "Intermediate values",
              f"{s.names[0]} at each validation (by optimizer step), completed and pruned trials told apart.",
              missing, lambda: _intermediate(study, s.trials, s.names[0]))
    if s.multi:
        missing = (s.none_complete or (None if len(s.names) in (2, 3) else
                   f"a Pareto-front plot shows 2 or 3 objectives; this sweep has {len(s.names)}"))
    else:
        missing = "a single-objective sweep has no Pareto front"
    pics.draw("pareto_front.png", "Pareto front", "Every completed trial by its objectives; the Pareto-optimal "
              "ones are highlighted.", missing, lambda: vis.plot_pareto_front(study, target_names=s.names))


def _importances(pics: Pictures, s: _Study) -> None:
    import optuna
    import optuna.visualization.matplotlib as vis

    varied = _varied_params(s.complete)
    missing = s.none_complete or s.no_params
    if missing is None and len(varied) < 2:
        missing = (f"importances need at least 2 parameters that vary across completed trials; "
                   f"this sweep has {len(varied)}{' (' + ', '.join(varied) + ')' if varied else ''}")
    if missing is None and len(s.complete) < MIN_TRIALS_FOR_IMPORTANCES:
        missing = (f"importances need at least {MIN_TRIALS_FOR_IMPORTANCES} completed trials; "
                   f"{len(s.complete)} completed")
    pics.draw("importances.png", "Parameter importances",
              "Share of the objective's variance each parameter explains (fANOVA over the completed trials).",
              missing, lambda: vis.plot_param_importances(
                  s.study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                  **({} if s.multi else {"target_name": s.names[0]})))


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
                      label=f"{STATE_WORDS[s]} ({counts[s]})") for s in styles if s in counts]
    ax.legend(handles=handles, loc="best")
    ax.set_ylabel(name)
    return ax


# ------------------------------------------------------------------------------------------------ from metrics.csv


def _curves_figure(plt: Any, series: Mapping[str, Curve], title: str) -> Any:
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


def best_curves(pics: Pictures, sweep_dir: Path, best: TrialRow | None, multi: bool, name: str) -> None:
    """``best_trial.png``: the best trial's curves (for several objectives: the front's best first objective)."""
    missing = None
    series: dict[str, Curve] = {}
    if best is None:
        missing = "no trial completed yet"
    else:
        path = run_dir(sweep_dir, best) / "metrics.csv"
        series = read_metrics(path)
        if not path.is_file():
            missing = (f"trial {best.number} has no metrics.csv (in {path.parent}); the curves come from the csv "
                       "logger: add it, e.g. logger=[csv,wandb]")
        elif not series:
            missing = f"{path} holds no metric"
    which = "of the Pareto front with the best first objective" if multi else ""
    title = f"trial {best.number}{' ' + which if which else ''}: training curves" if best else ""
    pics.draw("best_trial.png", "Best trial: training curves",
              (f"Trial {best.number}{' (' + which + ')' if which else ''}, {name} = {fmt(best.value)}: its "
               "losses, validation metrics and learning rate by optimizer step (from its metrics.csv).")
              if best else "", missing, lambda: _with_plt(lambda plt: _curves_figure(plt, series, title)))


# ------------------------------------------------------------------------------------------------ the comparison


def _heatmap(plt: Any, comp: Comparison, name: str) -> Any:
    import numpy as np

    grid = np.full((len(comp.rows), len(comp.cols)), np.nan)
    for (r, c), cell in comp.cells.items():
        if cell.mean is not None and math.isfinite(cell.mean):
            grid[comp.rows.index(r), comp.cols.index(c)] = cell.mean
    fig, ax = plt.subplots(figsize=(1.6 * len(comp.cols) + 2.5, 0.7 * len(comp.rows) + 1.8))
    ax.grid(False)
    cmap = plt.get_cmap("viridis" if comp.direction == "maximize" else "viridis_r").with_extremes(bad="0.85")
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
    fig.colorbar(image, ax=ax, label=f"{name} ({'higher' if comp.direction == 'maximize' else 'lower'} is better)")
    ax.set_title(f"{name} by {comp.row_key} and {comp.col_key}"
                 + (f", mean over {comp.seeds} seeds" if comp.seeds > 1 else ""))
    fig.tight_layout()
    return fig


def _best_pair_curves(sweep_dir: Path, comp: Comparison, rows: Sequence[TrialRow],
                      name: str) -> tuple[str, list[tuple[str, Curve]]]:
    """The metric to draw (``val/loss``, else the objective) and one labelled curve per optimizer's best pair."""
    by_number = {t.number: t for t in rows}
    runs: list[tuple[str, str, list[dict[str, Curve]]]] = []
    for r in comp.rows:
        c = comp.best_col(r)
        if c is not None:
            runs.append((r, c, [read_metrics(run_dir(sweep_dir, by_number[n]) / "metrics.csv")
                                for n in comp.cells[r, c].trials]))
    metric = "val/loss" if any("val/loss" in s for _, _, ss in runs for s in ss) else name
    lines: list[tuple[str, Curve]] = []
    for r, c, ss in runs:
        curves = [s[metric] for s in ss if s.get(metric)]
        if curves:
            label = f"{r} ({c})" + (f", mean of {len(curves)}" if len(curves) > 1 else "")
            lines.append((label, mean_curve(curves)))
    return metric, lines


def _curves_plot(plt: Any, comp: Comparison, metric: str, lines: Sequence[tuple[str, Curve]]) -> Any:
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


def comparison_pictures(pics: Pictures, sweep_dir: Path, comp: Comparison, rows: Sequence[TrialRow],
                        name: str) -> list[Picture]:
    """``comparison.png`` (the table as a heatmap) and ``comparison_curves.png``; returns both pictures."""
    drawable = any(c.mean is not None and math.isfinite(c.mean) for c in comp.cells.values())
    heatmap = pics.draw("comparison.png", f"{comp.row_key} x {comp.col_key}: heatmap",
                        "The table above as colours.", None if drawable else "no pair has a completed trial",
                        lambda: _with_plt(lambda plt: _heatmap(plt, comp, name)))
    metric, lines = _best_pair_curves(sweep_dir, comp, rows, name)
    curves = pics.draw(
        "comparison_curves.png", f"{metric} by {comp.row_key} (its best {comp.col_key})",
        f"The {metric} curve of each {comp.row_key} with the {comp.col_key} of its best mean "
        "(averaged over the seeds of that pair), from the runs' metrics.csv.",
        None if lines else "no run of a best pair has a metrics.csv with val/loss (add the csv logger)",
        lambda: _with_plt(lambda plt: _curves_plot(plt, comp, metric, lines)))
    return [heatmap, curves]
