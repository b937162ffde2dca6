"""The sweep report (:mod:`lightopt.search.report`, ``python -m lightopt.report``) and the W&B runs of a sweep:
from real short sweeps on digits.

One real grid sweep (2 optimizers x 2 schedules, one short epoch each, CSV and offline W&B loggers) is shared
by the end-to-end tests; the comparison table's arithmetic is checked on hand-built trials.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightopt.report import main
from lightopt.search.report import (
    PICTURES,
    TrialRow,
    build_report,
    cell_text,
    comparison_table,
    write_comparison_csv,
)
from tests.helpers import LR, QUICK, bowl, out_of_memory, run_cli, sweep_in_process, two_objectives

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WANDB_CLI = Path(sys.executable).parent / "wandb"


# ------------------------------------------------------------------------------------------- the table alone


def rows(*specs) -> list[TrialRow]:
    return [TrialRow(i, state, None if value is None else (value,), params)
            for i, (state, value, params) in enumerate(specs)]


def test_comparison_table_mean_and_std_over_seeds():
    values = {("sgd", "constant"): [0.50, 0.60, 0.70], ("sgd", "cosine"): [0.80, 0.82, 0.90],
              ("adam", "constant"): [0.91, 0.93, 0.95], ("adam", "cosine"): [0.97]}
    specs = [("COMPLETE", v, {"optimizer": o, "schedule": s, "seed": seed})
             for (o, s), vs in values.items() for seed, v in enumerate(vs)]
    specs += [("FAIL", None, {"optimizer": "adam", "schedule": "cosine", "seed": 1}),
              ("PRUNED", 0.1, {"optimizer": "adam", "schedule": "cosine", "seed": 2}),  # pruned: not averaged
              ("FAIL", None, {"optimizer": "rmsprop", "schedule": "constant", "seed": 0}),
              ("RUNNING", None, {"optimizer": "nadam", "schedule": "constant", "seed": 0})]  # not finished: left out
    comp = comparison_table(rows(*specs), "maximize", order={"schedule": ["cosine", "constant", "linear"]})
    assert comp.rows == ["sgd", "adam", "rmsprop"]  # first appearance; running trials are not in the table
    assert comp.cols == ["cosine", "constant"]  # the sweep's order, choices never run left out
    assert set(comp.cells) == {("sgd", "constant"), ("sgd", "cosine"), ("adam", "constant"), ("adam", "cosine"),
                               ("rmsprop", "constant")}
    for pair, vs in values.items():
        cell = comp.cells[pair]
        assert cell.n == len(vs) and cell.mean == pytest.approx(statistics.mean(vs))
        assert cell.std == (pytest.approx(statistics.stdev(vs)) if len(vs) > 1 else None)
    assert comp.cells["sgd", "constant"].std == pytest.approx(0.1)  # sample std (n - 1) of 0.5, 0.6, 0.7
    assert comp.cells["adam", "cosine"].incomplete == 2 and comp.cells["adam", "cosine"].trials == [9]
    failed = comp.cells["rmsprop", "constant"]
    assert failed.mean is None and failed.n == 0 and failed.incomplete == 1
    assert comp.seeds == 3 and comp.varied == []
    assert comp.best_col("sgd") == "cosine" and comp.best_col("adam") == "cosine" and comp.best_col("rmsprop") is None
    assert cell_text(comp.cells["sgd", "constant"]) == "0.6 ± 0.1 (n=3)"
    assert cell_text(comp.cells["adam", "cosine"]) == "0.97"
    assert cell_text(failed) == "- (1 not completed)"
    # lower is better: the best schedule flips
    assert comparison_table(rows(*specs), "minimize").best_col("adam") == "constant"


def test_comparison_takes_each_pairs_best_setting_of_other_params(tmp_path):
    specs = [("COMPLETE", v, {"optimizer": "adam", "schedule": "cosine", "optimizer.lr": lr, "seed": seed})
             for lr, vs in ((0.1, [0.2, 0.4]), (0.01, [0.8, 0.9])) for seed, v in enumerate(vs)]
    specs.append(("COMPLETE", 0.5, {"optimizer": "sgd", "schedule": "cosine", "optimizer.lr": 0.1, "seed": 0}))
    comp = comparison_table(rows(*specs), "maximize")
    cell = comp.cells["adam", "cosine"]
    assert cell.mean == pytest.approx(0.85) and cell.others == {"optimizer.lr": 0.01} and cell.trials == [2, 3]
    assert comp.varied == ["optimizer.lr"]
    write_comparison_csv(tmp_path / "comparison.csv", comp)
    with open(tmp_path / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["optimizer"], r["schedule"], r["n"], r["trials"], r["optimizer.lr"]) for r in table] == [
        ("adam", "cosine", "2", "2 3", "0.01"), ("sgd", "cosine", "1", "4", "0.1")]
    assert float(table[0]["std"]) == pytest.approx(statistics.stdev([0.8, 0.9])) and table[1]["std"] == ""
    # without both keys searched there is no comparison
    assert comparison_table(rows(("COMPLETE", 0.5, {"optimizer": "sgd"})), "maximize") is None


# ------------------------------------------------------------------------------------------- a real sweep


def pictures(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep_dir.glob("*.png")}


def assert_real_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100, (path, image.shape)
    rgb = (image[..., :3] * 255).astype(np.uint32)
    colors = len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))
    assert colors > 16 and float(image[..., :3].std()) > 0.02, (path, colors)  # not blank, not a flat fill


class Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def check_pictures(sweep_dir: Path) -> None:
    written = pictures(sweep_dir)
    assert set(written) == {"history.png", "importances.png", "parallel_coordinates.png", "slice.png",
                            "intermediate_values.png", "best_trial.png", "comparison.png", "comparison_curves.png"}
    assert set(written) <= set(PICTURES)
    for path in written.values():
        assert_real_png(path)
    page = (sweep_dir / "report.html").read_text()
    assert "Not drawn: a single-objective sweep has no Pareto front" in page  # a missing picture says why


def check_html_refers_only_to_files_of_the_sweep_dir(sweep_dir: Path) -> None:
    parser = Refs()
    parser.feed((sweep_dir / "report.html").read_text())
    assert "script" not in parser.tags and "link" not in parser.tags
    assert {r for r in parser.refs if r.endswith(".png")} == set(pictures(sweep_dir))
    for ref in parser.refs:
        assert "://" not in ref and not ref.startswith(("/", "//", "data:")), ref
        target = (sweep_dir / ref).resolve()
        assert target.is_file() and target.is_relative_to(sweep_dir.resolve()), ref
    assert "trials.csv" in parser.refs and "0/results.json" in parser.refs


def check_best_trials_table(sweep_dir: Path) -> None:
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    page = (sweep_dir / "report.html").read_text()
    assert f"Sweep report: {best['study_name']}" in page
    best_table = page.split("<h2>Best trials</h2>", 1)[1].split("<h2>", 1)[0]
    assert '<tr class="best"><td class="num">' + str(best["best_trial"]) in best_table
    assert all(f"<td>{v}</td>" in best_table for v in best["best_params"].values())


def check_comparison_has_every_pair_that_ran(sweep_dir: Path) -> None:
    with open(sweep_dir / "trials.csv") as f:
        trials = {(r["optimizer"], r["schedule"]): r for r in csv.DictReader(f)}
    with open(sweep_dir / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert {(r["optimizer"], r["schedule"]) for r in table} == set(trials) == {
        (o, s) for o in ("sgd", "adam") for s in ("constant", "cosine")}
    page = (sweep_dir / "report.html").read_text()
    for r in table:
        trial = trials[r["optimizer"], r["schedule"]]
        assert r["n"] == "1" and r["std"] == "" and r["trials"] == trial["number"]  # one seed: no std
        assert float(r["mean"]) == pytest.approx(float(trial["value"]))
        assert f"{float(r['mean']):.4g}" in page


def wandb_cli(*args: str) -> str:
    return subprocess.run([str(WANDB_CLI), "leet", "inspect", *args], capture_output=True, text=True,
                          check=True).stdout


def run_record(run_file: Path) -> dict:
    """The offline run's run record: name, group (``run_group``), ``job_type``, tags..."""
    records = [json.loads(line) for line in wandb_cli("--json", str(run_file)).splitlines() if line.strip()]
    return next(r["run"] for r in records if r.get("type") == "run")


def check_wandb_trials_and_sweep_summary(sweep_dir: Path) -> None:
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    (run_file,) = (sweep_dir / str(best["best_trial"]) / "wandb").glob("offline-run-*/run-*.wandb")
    run = run_record(run_file)
    assert run["run_group"] == best["study_name"] and run["job_type"] == "trial"
    # named by trial number and the searched choices, not the overrides every trial shares
    params = best["best_params"]
    assert run["display_name"] == f"{best['best_trial']}-{params['optimizer']}-{params['schedule']}"

    (run_file,) = (sweep_dir / "wandb").glob("offline-run-*/run-*.wandb")  # the summary, in the sweep dir
    run = run_record(run_file)
    assert run["run_group"] == best["study_name"] and run["job_type"] == "sweep-summary"
    record = json.loads(wandb_cli("--summary", "--json", str(run_file)))
    assert record["state"] == "finished"
    summary = record["summary"]
    assert summary["best_value"] == pytest.approx(best["best_value"]) and summary["best_params"] == best["best_params"]
    assert summary["trials"]["_type"] == "table-file" and summary["trials"]["nrows"] == 4
    table = json.loads((run_file.parent / "files" / summary["trials"]["path"]).read_text())
    assert table["columns"][:3] == ["number", "state", "value"] and {"optimizer", "schedule"} <= set(table["columns"])
    assert sorted(row[0] for row in table["data"]) == [0, 1, 2, 3]
    images = {k.removeprefix("report/") for k, v in summary.items()
              if k.startswith("report/") and v["_type"] == "image-file"}
    assert images == {p.stem for p in pictures(sweep_dir).values()}
    for key in images:
        assert (run_file.parent / "files" / summary[f"report/{key}"]["path"]).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.skipif(not WANDB_CLI.exists(), reason="wandb CLI missing")
def test_grid_sweep_writes_the_report_the_comparison_and_wandb_runs(tmp_path, monkeypatch, capsys):
    """``python train.py -m``: 2 optimizers x 2 schedules, one short epoch each, CSV + offline W&B.

    One test (one sweep, ~25 s) for everything that needs a real sweep: a module fixture would run the sweep
    once per pytest-xdist worker.
    """
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no credentials: W&B offline
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, "trainer.max_epochs=1", "checkpoint.enabled=false", "logger=[csv,wandb]",
                   f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/sampler=grid", "optimizer=choice(sgd,adam)",
                   "schedule=choice(constant,cosine)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"sweep report: {sweep_dir / 'report.html'}" in proc.stdout + proc.stderr

    check_pictures(sweep_dir)
    check_html_refers_only_to_files_of_the_sweep_dir(sweep_dir)
    check_best_trials_table(sweep_dir)
    check_comparison_has_every_pair_that_ran(sweep_dir)
    check_wandb_trials_and_sweep_summary(sweep_dir)

    # rebuilt by the CLI's main: a deleted picture comes back
    (sweep_dir / "history.png").unlink()
    assert main([str(sweep_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(sweep_dir / "report.html")
    assert_real_png(sweep_dir / "history.png")

    # the same command again (nothing left to run): the summary goes to the same W&B run, not a new one
    proc = run_cli("-m", *QUICK, "trainer.max_epochs=1", "checkpoint.enabled=false", "logger=[csv,wandb]",
                   f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/sampler=grid", "optimizer=choice(sgd,adam)",
                   "schedule=choice(constant,cosine)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted((sweep_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(summaries) == 2 and len({run_record(f)["run_id"] for f in summaries}) == 1


# ------------------------------------------------------------------------------------------- other sweeps


def test_multi_objective_report_draws_the_pareto_front_and_says_what_is_missing(tmp_path):
    sweep_in_process(tmp_path, two_objectives, "hydra/sweeper/sampler=nsgaii",
                     "hydra.sweeper.sampler.population_size=2", "hydra.sweeper.n_trials=3",
                     "hydra.sweeper.direction=[maximize,minimize]",
                     "hydra.sweeper.objectives=[val/acc,wall_seconds]", LR, "logger=csv")
    written = pictures(tmp_path)
    assert {"pareto_front.png", "history.png", "history_2.png", "slice.png"} <= set(written)
    for path in written.values():
        assert_real_png(path)
    page = (tmp_path / "report.html").read_text()
    assert "Pareto front" in page and "importances need at least 2 parameters" in page
    assert "has no metrics.csv" in page  # the task wrote no curves
    assert "this one did not" in page and not (tmp_path / "comparison.csv").exists()


def test_a_stopped_sweep_gets_a_report_and_a_broken_report_never_fails_a_sweep(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        sweep_in_process(tmp_path / "failing", out_of_memory, "hydra.sweeper.n_trials=10", LR, "logger=csv")
    assert exit_.value.code == 1
    page = (tmp_path / "failing" / "report.html").read_text()
    assert "No trial completed yet" in page and "Not drawn: no trial completed yet" in page

    def broken(*args, **kwargs):
        raise RuntimeError("no disk space")

    monkeypatch.setattr("lightopt.search.report.sweep_end.make_report", broken)
    capsys.readouterr()
    sweep_in_process(tmp_path / "ok", bowl, "hydra.sweeper.n_trials=2", LR, "logger=csv")  # no SystemExit
    with open(tmp_path / "ok" / "trials.csv") as f:
        assert [r["state"] for r in csv.DictReader(f)] == ["COMPLETE"] * 2
    out = capsys.readouterr().out  # Hydra's log handler writes to stdout
    assert "the sweep report could not be built (RuntimeError: no disk space)" in out
    assert f"python -m lightopt.report {tmp_path / 'ok'}" in out


def test_cli_on_a_directory_that_is_not_a_sweep_exits_2(tmp_path):
    (tmp_path / "outputs").mkdir()
    proc = run_cli(str(tmp_path / "outputs"), cwd=tmp_path, module="lightopt.report")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: report: {tmp_path / 'outputs'}: no optimization_results.yaml")
    assert "python train.py -m" in line and "optuna.db" in line
    assert not (tmp_path / "outputs" / "report.html").exists()
    assert main([str(tmp_path / "missing")]) == 2


def test_report_finds_the_study_after_the_sweep_dir_moved(tmp_path):
    sweep_in_process(tmp_path / "a", bowl, "hydra.sweeper.n_trials=3", LR, "optimizer=choice(sgd,adam)",
                     "hydra.sweeper.report=false")
    assert not (tmp_path / "a" / "report.html").exists()
    (tmp_path / "a").rename(tmp_path / "b")
    page = build_report(tmp_path / "b").read_text()
    assert "sqlite:///" + str(tmp_path / "b" / "optuna.db") in page
    assert math.isfinite(float(yaml.safe_load((tmp_path / "b" / "optimization_results.yaml").read_text())
                               ["best_value"]))
