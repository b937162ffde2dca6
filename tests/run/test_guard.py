"""A run into a directory that holds an earlier run, or that cannot be written, is refused before Hydra writes
anything there."""

from __future__ import annotations

from tests.helpers import QUICK, run_cli


def snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_rerun_into_a_finished_run_changes_nothing_of_it(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(run_dir)
    again = run_cli(*QUICK, "optimizer.lr=0.5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2
    line = again.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: hydra.run.dir='{run_dir}': it holds an earlier run")
    assert "ckpt_path=" in line
    assert snapshot(run_dir) == before  # .hydra/ records, metrics.csv, checkpoints, results.json untouched


def test_a_killed_runs_directory_is_refused_too(tmp_path):
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,train/loss\n0,2.3\n")  # what a run killed mid-way leaves
    proc = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2 and "metrics.csv" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.csv"]


def test_a_run_directory_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "file" / "run"
    proc = run_cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: hydra.run.dir='{run_dir}': cannot write there"), line
    assert "Traceback" not in proc.stderr
