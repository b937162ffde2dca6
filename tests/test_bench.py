"""The benchmark's small CPU mode runs and writes its JSON and Markdown."""

import importlib.util
import json

import pytest

from tests.helpers import ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_step_path_names_the_implementation_a_step_runs():
    import torch

    bench = load_bench()
    params = [torch.nn.Parameter(torch.zeros(4))]
    assert bench.step_path(torch.optim.AdamW(params, fused=True)) == "fused"
    assert bench.step_path(torch.optim.RMSprop(params, foreach=True)) == "foreach"
    # left unset, torch picks foreach for CUDA tensors only: CPU tensors take the per-tensor loop
    assert bench.step_path(torch.optim.RMSprop(params)) == "for-loop"


def test_spread_of_the_rounds_says_when_the_machine_was_too_noisy():
    bench = load_bench()
    assert bench.spread([1.0, 1.02, 1.04]) == {"round_ratios": [1.0, 1.02, 1.04], "spread": 0.039, "noisy": False}
    assert bench.spread([0.8, 1.0, 1.05])["noisy"] is True
    row = bench.markdown_row("x", {"ratio": 0.9, "a_per_s": 1, "b_per_s": 2, "spread": 0.25, "noisy": True})
    assert "0.9 (noisy: rounds spread 25%)" in row


def test_only_runs_the_named_cases_and_refuses_unknown_ones(tmp_path, capsys):
    bench = load_bench()
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--small", "--only", "cpu_digits,cpu_gtp", "--out", str(tmp_path / "r.json")])
    assert exit_.value.code == 2 and "unknown case(s) cpu_gtp" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_small_cpu_benchmark_writes_ratios(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "results.json"
    bench.main(["--small", "--out", str(out)])
    printed = capsys.readouterr().out
    # each case's figures as it finishes, before the final table
    assert printed.index("[1/11] cpu_digits ...") < printed.index("[1/11] | cpu_digits |") < printed.index(
        "[2/11] cpu_digits_wandb ...")
    data = json.loads(out.read_text())
    case = data["cpu_digits"]
    assert case["lightopt_steps_per_s"] > 0 and case["plain_steps_per_s"] > 0
    assert abs(case["ratio"] - case["lightopt_steps_per_s"] / case["plain_steps_per_s"]) < 0.01
    steps = data["cpu_optimizer_step"]
    assert set(steps["optimizers"]) >= {"sgd", "adam", "adamw", "muon"}
    # lightopt's default path: the fused kernel wherever the class has one
    assert {steps["optimizers"][n]["path"] for n in ("sgd", "momentum", "adam", "adamw", "adagrad")} == {"fused"}
    assert steps["ratio"] == steps["optimizers"]["adamw"]["share_of_bound"] > 0
    gpt = data["cpu_gpt"]
    assert gpt["lightopt_tokens_per_s"] > 0 and gpt["plain_tokens_per_s"] > 0 and gpt["params"] > 0
    sweeps = data["cpu_sweep_parallel"]
    assert sweeps["parallel_trials_per_min"] > 0 and sweeps["sequential_trials_per_min"] > 0
    for name in ("sweep_idle", "sweep_idle_joblib"):
        assert 0 <= data[name]["idle_per_slot_time"] < 1 and data[name]["barrier_idle_per_slot_time"] > 0
    start = data["cpu_start_up"]  # launch to first step, phase by phase, over the bare import of Lightning
    assert start["seconds_to_first_step"] == pytest.approx(sum(start["phases_s"].values()), abs=0.01)
    assert start["ratio"] == pytest.approx(start["seconds_to_first_step"] / start["bare_lightning_import_s"],
                                           abs=0.01)
    overhead = data["sweeper_overhead"]  # the same jobs of the trivial app under both sweepers
    assert overhead["ratio"] == pytest.approx(overhead["lightopt_ms_per_trial"] / overhead["basic_ms_per_trial"],
                                              abs=0.01)
    flat = data["sweeper_flat"]
    assert flat["ratio"] == pytest.approx(flat["last10_ms_per_trial"] / flat["first10_ms_per_trial"], abs=0.01)
    assert len(flat["ms_per_trial_by_block"]) == 3  # 29 gaps between 30 trials, in blocks of 10
    cost = data["digits_trial_cost"]
    assert 0 < cost["step_s_per_trial"] < cost["lightopt_s_per_trial"] and 0 < cost["not_training_share"] < 1
    assert cost["step_s_per_trial"] + cost["run_fixed_s_per_trial"] + cost["sweep_s_per_trial"] == pytest.approx(
        cost["lightopt_s_per_trial"], abs=0.01)
    table = out.with_suffix(".md").read_text()
    assert "| cpu_digits |" in table and "| cpu_sweep_parallel |" in table


@pytest.mark.slow
def test_small_sweep_benchmark_compares_pruning_with_no_pruning(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_sweeps", ROOT / "bench" / "sweeps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "sweeps.json"
    bench.main(["--small", "--only", "pruning", "--out", str(out)])
    pruners = json.loads(out.read_text())["pruning"]["pruners"]
    assert set(pruners) == {"none", "median"}
    assert pruners["none"]["median_steps_ratio"] == 1.0
    run = pruners["median"]["runs"][0]
    unpruned = pruners["none"]["runs"][0]["training_steps"]
    assert run["training_steps"] > 0 and run["steps_ratio"] == round(run["training_steps"] / unpruned, 3)
