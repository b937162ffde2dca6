"""The records a sweep and its jobs hand each other: trial.json one way, results.json the other."""

from __future__ import annotations

import json
import math
import stat

import pytest

from lightopt.contract import RESULTS_FILE, TRIAL_FILE, RunResult, TrialContext


def test_trial_context_round_trips_through_its_run_directory_readable_by_its_owner_only(tmp_path):
    context = TrialContext("postgresql://u:secret@h/db", "study", 3, {"_target_": "optuna.pruners.MedianPruner"},
                           ("optimizer.lr",), ("python", "train.py"), str(tmp_path))
    path = context.write(tmp_path)
    assert path == tmp_path / TRIAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the storage URL may hold a password
    assert TrialContext.read(tmp_path) == context
    assert TrialContext.read(tmp_path / "elsewhere") is None  # not a sweep trial
    assert TrialContext.current() is None  # outside Hydra


def test_run_result_is_strict_json_with_null_for_a_value_that_is_not_finite(tmp_path):
    result = RunResult("val/acc", -math.inf, "maximize", "diverged",
                       {"val/acc": {"final": 0.5, "best": 0.75, "best_step": 10, "direction": "maximize"}},
                       global_step=12, epochs=2, wall_seconds=1.5)
    result.metrics["val/loss"] = {"final": math.nan, "best": 2.5, "best_step": 4, "direction": "minimize"}
    result.write(tmp_path)

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    written = json.loads((tmp_path / RESULTS_FILE).read_text(), parse_constant=refuse)
    assert written["value"] is None and written["status"] == "diverged"
    assert written["metrics"]["val/loss"] == {"final": None, "best": 2.5, "best_step": 4, "direction": "minimize"}
    back = RunResult.read(tmp_path)
    assert back.value is None and back.metrics["val/acc"] == result.metrics["val/acc"]
    assert RunResult.read(None) is None and RunResult.read(tmp_path / "none") is None


def test_a_damaged_results_file_counts_as_none(tmp_path, caplog):
    (tmp_path / RESULTS_FILE).write_text('{"objective": "val/acc", "val')
    assert RunResult.read(tmp_path) is None
    assert "cannot read" in caplog.text


def test_value_of_names_the_objective_a_metric_or_a_number():
    result = RunResult("val/acc", 0.8, "maximize", "completed",
                       {"val/loss": {"final": 0.4, "best": 0.3, "best_step": 5, "direction": "minimize"}},
                       wall_seconds=12.0)
    assert result.value_of("val/acc") == 0.8
    assert result.value_of("val/loss") == 0.3 and result.value_of("val/loss:final") == 0.4
    assert result.value_of("wall_seconds") == 12.0
    with pytest.raises(KeyError, match="'val/f1' is not in results.json.*metrics \\['val/loss'\\]"):
        result.value_of("val/f1")
