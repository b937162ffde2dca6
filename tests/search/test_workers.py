"""``hydra.sweeper.n_jobs`` > 1: trials in flight in the sweep's worker processes never wait for each other, the
study still gets exactly ``n_trials``, and a stopped sweep stops its workers and records their trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna

from tests.helpers import ROOT, TINY_APP, rows, run_tiny

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_of(sweep_dir) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_a_short_trial_starts_as_soon_as_one_ends_while_a_long_one_runs(tmp_path):
    sweep_dir = tmp_path / "s"
    # the first process takes the 4 s trial; the worker runs the short ones meanwhile (a batch of 2 would wait)
    proc = run_tiny("-m", "sleep=choice(0.2,4.0)", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                    "hydra.sweeper.enqueue=[{sleep:4.0},{sleep:0.2},{sleep:0.2},{sleep:0.2}]",
                    f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 more sweep processes run trials on this study (their logs: worker-1.log)" in proc.stdout
    trials = study_of(sweep_dir).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    (long,) = [t for t in trials if t.params["sleep"] == 4.0]
    during = [t for t in trials if long.datetime_start < t.datetime_start < long.datetime_complete]
    assert len(during) == 3, [(t.number, t.datetime_start, t.datetime_complete) for t in trials]
    assert "trial" in (sweep_dir / "worker-1.log").read_text()
    assert len(rows(sweep_dir)) == 4  # the first process's outputs hold every process's trials


def test_sigterm_stops_the_workers_too_and_a_rerun_completes_exactly_n_trials(tmp_path):
    sweep_dir = tmp_path / "s"
    args = [sys.executable, str(TINY_APP), "-m", "x=interval(0,2)", "sleep=3", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((sweep_dir / "0" / ".hydra").is_dir() and (sweep_dir / "1" / ".hydra").is_dir()):
        assert proc.poll() is None and time.monotonic() < deadline, "two trials did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 143, proc.stderr.read()[-2000:]
    trials = study_of(sweep_dir).trials
    assert {t.number: t.state.name for t in trials} == {0: "FAIL", 1: "FAIL"}  # the worker's trial recorded too
    assert all(t.user_attrs["error"] == "interrupted (SIGTERM)" for t in trials)
    again = subprocess.run([*args[:4], "sleep=3", *args[5:]], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    states = [t.state.name for t in sorted(study_of(sweep_dir).trials, key=lambda t: t.number)]
    assert states == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]  # interrupted trials count in n_trials, not as failures


def test_a_killed_sweep_stops_its_worker_and_resumes_to_exactly_n_trials(tmp_path):
    sweep_dir = tmp_path / "s"
    args = [sys.executable, str(TINY_APP), "-m", "x=interval(0,2)", "sleep=3", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ((sweep_dir / "0" / ".hydra").is_dir() and (sweep_dir / "1" / ".hydra").is_dir()):
        assert proc.poll() is None and time.monotonic() < deadline, "two trials did not start"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no bookkeeping in the first process
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while "sweep interrupted (SIGTERM)" not in (sweep_dir / "worker-1.log").read_text():  # told by the kernel
        assert time.monotonic() < deadline, "the worker went on after its first process died"
        time.sleep(0.1)
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = sorted(study_of(sweep_dir).trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert {t.user_attrs["error"] for t in trials[:2]} == {"its sweep process died", "interrupted (SIGTERM)"}
