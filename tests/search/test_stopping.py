"""A sweep stops in time: ``hydra.sweeper.timeout`` and ``hydra.sweeper.stop`` (patience, min_delta), the reason
printed and written to optimization_results.yaml."""

from __future__ import annotations

import datetime

import optuna
import pytest
import yaml

from lightopt.errors import ConfigError
from lightopt.search.stopping import StopRules, stale_trials
from tests.helpers import rows, run_tiny


def optuna_trials(values):
    """Completed trials finishing one second apart, in the order of ``values``."""
    start = datetime.datetime(2026, 1, 1)
    trials = []
    for i, v in enumerate(values):
        t = optuna.trial.create_trial(value=v, params={}, distributions={})
        t.datetime_complete = start + datetime.timedelta(seconds=i)
        trials.append(t)
    return trials


def test_stale_trials_counts_completed_trials_since_the_last_real_improvement():
    trials = optuna_trials([5.0, 4.0, 3.95, 3.99, 4.5])
    assert stale_trials(trials, maximize=False, min_delta=0.0) == 2  # 3.95 was the last improvement
    assert stale_trials(trials, maximize=False, min_delta=0.1) == 3  # 3.95 is not better than 4.0 by 0.1
    assert stale_trials(trials, maximize=True, min_delta=0.0) == 4  # 5.0 first, never beaten
    assert stale_trials([], maximize=True, min_delta=0.0) == 0


@pytest.mark.parametrize("cfg,match", [({"timeout": 0}, "hydra.sweeper.timeout=0"),
                                       ({"stop": {"patience": 0}}, "hydra.sweeper.stop.patience=0"),
                                       ({"stop": {"patiense": 3}}, "hydra.sweeper.stop=")])
def test_bad_stop_settings_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        StopRules.of(cfg, 1)


def test_patience_ends_a_long_sweep_early(tmp_path):
    sweep_dir = tmp_path / "s"
    proc = run_tiny("-m", "y=choice(0,1,2)", "hydra.sweeper.n_trials=30", "hydra/sweeper/sampler=random",
                    "hydra.sweeper.stop={patience:3,min_delta:0.5}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = rows(sweep_dir)
    assert len(table) < 30
    values = [float(r["value"]) for r in table]
    assert stale_trials(optuna_trials(values), maximize=False, min_delta=0.5) == 3
    ended = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["ended"]
    assert ended.startswith("no improvement of the best value by more than 0.5 in the last 3 completed trials")
    assert "sweep ended early: no improvement" in proc.stdout


def test_timeout_starts_no_trial_after_it(tmp_path):
    sweep_dir = tmp_path / "s"
    proc = run_tiny("-m", "x=interval(0,2)", "sleep=0.4", "hydra.sweeper.n_trials=50", "hydra.sweeper.timeout=1.5",
                    f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 1 <= len(rows(sweep_dir)) <= 6
    ended = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["ended"]
    assert ended == "timeout: 1.5 s since the sweep started (hydra.sweeper.timeout)"

