"""What a run prints: the summary before training, the final metrics after, and which progress bar."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from rich.console import Console

from lightopt.errors import ConfigError
from lightopt.formatting import fmt
from lightopt.run import console
from lightopt.run.data import DigitsDataModule
from lightopt.run.training import build_model, run
from tests.helpers import CONF, QUICK, ROOT, compose_cfg, run_cli


def render(renderable, width: int = 140) -> str:
    out = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    out.print(renderable)
    return out.export_text()


def row(text: str, label: str) -> str:
    """The value printed after ``label`` in a rendered two-column table."""
    match = re.search(rf"(?:^|\s){re.escape(label)}\s+(\S[^│\n]*?)\s*(?:│|$)", text, flags=re.M)
    assert match, f"no row {label!r} in\n{text}"
    return match.group(1)


# --- pure renderables -------------------------------------------------------------------------------------


def test_summary_panel_lists_every_section_and_value():
    text = render(console.summary_panel([
        ("optimizer", [("class", "AdamW (torch.optim.AdamW)"), ("lr", 0.003)]),
        ("schedule", [("name", "cosine"), ("T", 1200), ("warmup", 60)]),
        ("model", [("parameters", 26122)]),
    ]))
    assert "lightopt run" in text
    assert row(text, "T") == "1,200" and row(text, "warmup") == "60"
    assert row(text, "parameters") == "26,122" and row(text, "lr") == "0.003"
    assert text.index("optimizer") < text.index("schedule") < text.index("model")


def test_results_panel_shows_objective_status_metrics_and_time():
    res = {
        "objective": "val/acc", "value": 0.9733333, "direction": "maximize", "status": "completed",
        "lr": 0.0123, "lr_find": {"suggestion": 0.0123},
        "metrics": {"val/acc": {"final": 0.97, "best": 0.9733333, "best_step": 180},
                    "val/loss": {"final": 0.0912, "best": 0.0901, "best_step": 160}},
        "global_step": 200, "epochs": 10, "wall_seconds": 12.345, "best_checkpoint": None, "error": None,
    }
    text = render(console.results_panel(res))
    assert "val/acc = 0.973333" in text
    assert "completed" in text and "200 optimizer steps, 10 epochs" in text and "12.3 s" in text
    assert "0.0123 (lr_find)" in text
    assert re.search(r"val/acc\s+0\.97\s+0\.973333\s+180\b", text)  # final, best, best at step
    assert re.search(r"val/loss\s+0\.0912\s+0\.0901\s+160\b", text)


def test_results_panel_of_a_failed_run_shows_the_error():
    text = render(console.results_panel({"objective": "val/acc", "value": float("-inf"), "direction": "maximize",
                                         "status": "failed", "error": "RuntimeError: boom", "metrics": {},
                                         "global_step": 3, "epochs": 0, "wall_seconds": 1.0}))
    assert "failed" in text and "RuntimeError: boom" in text and "val/acc = -∞" in text


# --- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,in_sweep,isatty,summary,bar",
    [
        ([], False, True, True, "rich"),  # a terminal: Rich's live bar
        ([], False, False, True, "none"),  # a log file or CI: no bar
        ([], True, True, False, "rich"),  # a sweep: the sweeper prints its own lines
        (["console.summary=true"], True, False, True, "none"),
        (["console.summary=false", "console.progress_bar=tqdm"], False, False, False, "tqdm"),
        (["console.progress_bar=rich", "trainer.enable_progress_bar=false"], False, True, True, "none"),
    ],
)
def test_settings(overrides, in_sweep, isatty, summary, bar):
    resolved = console.settings(compose_cfg(*overrides), in_sweep=in_sweep, isatty=isatty)
    assert resolved == console.ConsoleSettings(summary=summary, progress_bar=bar)


def test_progress_bar_callbacks():
    assert [type(c) for c in console.progress_bar_callbacks(console.ConsoleSettings(True, "rich"))] == [RichProgressBar]
    assert [type(c) for c in console.progress_bar_callbacks(console.ConsoleSettings(True, "tqdm"))] == [TQDMProgressBar]
    assert console.progress_bar_callbacks(console.ConsoleSettings(True, "none")) == []


@pytest.mark.parametrize("override,key", [("console.summary=maybe", "console.summary='maybe'"),
                                          ("console.progress_bar=fancy", "console.progress_bar='fancy'")])
def test_bad_console_settings_fail_before_training(tmp_path, override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        run(compose_cfg(*QUICK, override), tmp_path)
    assert not (tmp_path / "results.json").exists()


# --- a real run ---------------------------------------------------------------------------------------------


def test_run_prints_its_summary_and_final_metrics(tmp_path, capsys):
    cfg = compose_cfg(*QUICK, "schedule.warmup=3", "optimizer=adamw", "optimizer.lr=0.002", "regularization=l2",
                      "regularization.weight_decay=0.05", "console.summary=true", "trainer.threads=1")
    value = run(cfg, tmp_path)
    out = capsys.readouterr().out
    summary, _, final = out.partition("lightopt results")
    assert "lightopt run" in summary and final

    params = sum(p.numel() for p in build_model(cfg, DigitsDataModule()).parameters())
    assert row(summary, "parameters") == f"{params:,}"
    assert row(summary, "T") == "10"  # 2 epochs x 5 batches: trainer.estimated_stepping_batches
    assert row(summary, "warmup") == "3"
    assert row(summary, "name") == "cosine"
    assert row(summary, "class").startswith("AdamW (torch.optim.AdamW)")
    assert row(summary, "lr") == "0.002"
    assert row(summary, "weight decay") == "0 / 0.05"  # biases and norms are not decayed
    assert "DigitsDataModule" in summary and "5 batches/epoch" in summary and "batch size" in summary
    assert row(summary, "precision") == "32-true" and row(summary, "accelerator") == "cpu x 1"
    assert row(summary, "CPU threads") == "1 (trainer.threads)" and torch.get_num_threads() == 1
    assert str(tmp_path) in re.sub(r"[\s│]", "", summary)  # a long path wraps in a narrow terminal

    assert f"val/acc = {fmt(value, 6)}" in final
    assert "completed" in final and "10 optimizer steps, 2 epochs" in final
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 < results["step_seconds"] < results["wall_seconds"]  # the steps, and the rest of the run


def test_summary_off_prints_nothing(tmp_path, capsys):
    run(compose_cfg(*QUICK, "console.summary=false"), tmp_path)
    out = capsys.readouterr().out
    assert "lightopt run" not in out and "lightopt results" not in out


def test_only_rank_zero_prints():
    out = Console(file=io.StringIO(), width=100, record=True)
    summary = console.RunSummary({}, "/tmp/run", console=out)
    summary.on_train_start(SimpleNamespace(is_global_zero=False), None)
    assert out.export_text() == "" and not summary.printed


@pytest.mark.parametrize("bar,drawn", [("auto", False), ("rich", True)])
def test_progress_bar_off_a_terminal(tmp_path, capsys, bar, drawn):
    # under pytest stdout is no terminal: auto draws no bar, although Lightning would default to Rich's
    run(compose_cfg(*QUICK, "trainer.enable_progress_bar=true", f"console.progress_bar={bar}",
                    "console.summary=false"), tmp_path)
    assert bool(re.search(r"Epoch 1/1 .* 5/5", capsys.readouterr().out)) == drawn


# --- the command line ------------------------------------------------------------------------------------------


def test_help_is_lightopts_own_page_with_every_group_and_choice(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("lightopt: choose and tune optimizers")
    assert "python train.py -m " in proc.stdout and "multirun/<date>/<time>/" in proc.stdout
    for group in ("optimizer", "schedule", "regularization", "model", "data", "tune", "search"):
        files = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert re.search(rf"^{group}: {', '.join(files)}$", proc.stdout, flags=re.M), group
    sweeper = ROOT / "hydra_plugins" / "lightopt_sweeper" / "conf" / "hydra" / "sweeper"
    for group in ("sampler", "pruner"):
        files = sorted(p.stem for p in (sweeper / group).glob("*.yaml"))
        assert f"hydra/sweeper/{group}: {', '.join(files)}\n" in proc.stdout, group


def test_cfg_job_prints_the_config_without_training(tmp_path):
    proc = run_cli("tune=lr_find", "tune.num_training=50", "console.summary=false", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tune:\n  name: lr_find\n  min_lr: 1.0e-06\n  max_lr: 10.0\n  num_training: 50\n" in proc.stdout
    assert "console:\n  summary: false\n  progress_bar: auto\n" in proc.stdout
    assert "lightopt run" not in proc.stdout
    assert not (tmp_path / "outputs").exists()


# what libraries print on their own, each a line a user reported as noise
NOISE = ["Tip: For seamless cloud logging", "GPU available", "TPU available", "exists and is not empty",
         "anonymous setting", "git root", "LeafSpec", "Total FLOPs", "Trainable params"]


def test_a_default_run_prints_lightopts_lines_and_no_library_noise(tmp_path):
    # the default config as a newcomer runs it: csv and W&B (offline) loggers, model summary as shipped
    proc = run_cli("trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert [n for n in NOISE if n in out] == []
    assert "lightopt run" in out and "lightopt results" in out


def test_a_sweep_prints_one_line_per_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *QUICK, "trainer.log_every_n_steps=5", "logger=[csv,wandb]",
                   "optimizer.lr=tag(log,interval(1e-3,1e-1))",
                   "hydra.sweeper.n_trials=3", "hydra.sweeper.report=false", f"hydra.sweep.dir={sweep_dir}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    per_trial = [line for line in lines if re.search(r"\] trial \d/3 \(#\d\): COMPLETE.*\| optimizer.lr=", line)]
    assert len(per_trial) == 3
    assert not [n for n in NOISE + ["Launching 1 jobs", "W&B: no credentials", "results in"]
                if n in proc.stdout + proc.stderr]
    # the study, the space, the three trials, the end, the table of the best trials (title, 3 borders, 3 rows)
    assert len(lines) == 2 + 3 + 1 + 8, "\n".join(lines)


def test_off_a_terminal_panels_never_cut_a_path(tmp_path):
    run_dir = tmp_path / ("a" * 90) / "run"  # far wider than 80 columns
    proc = run_cli(*QUICK, "logger=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = json.loads((run_dir / "results.json").read_text())["best_checkpoint"]
    assert f"best checkpoint  {best}" in proc.stdout and f"run dir       {run_dir}" in proc.stdout
    assert "…" not in proc.stdout
