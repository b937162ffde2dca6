"""Every bad value stops a run before training with one ConfigError naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch

from lightopt.run.training import run
from tests.helpers import QUICK, compose_cfg, run_cli, train_in_process

BAD = [
    ("optimizer.betas=[0.9]", "optimizer='torch.optim.Adam'", "values Adam accepts"),
    ("data.batch_size=0", "data.batch_size=0", "an integer >= 1"),
    ("data.batch_size=-5", "data.batch_size=-5", "an integer >= 1"),
    ("data.batch_size=32.5", "data.batch_size=32.5", "an integer >= 1"),
    ("data.batch_size=1e9", "data.batch_size=1000000000.0", "an integer >= 1"),
    # digits: 1797 samples, 20% for validation
    ("data.batch_size=100000", "data.batch_size=100000: larger than the training split", "at most the training "
     "samples (1438;"),
    # QUICK: 2 epochs of 5 batches
    ("schedule=cosine schedule.total_steps=4", "schedule.total_steps=4: shorter than the run", "at least 10"),
    ("data.val_fraction=0", "data.val_fraction=0", "a fraction in (0, 1)"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5", "a fraction in (0, 1)"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0", "an integer >= 1"),
    ("trainer.max_epochs=-5", "trainer.max_epochs=-5", "-1 for no limit"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc'", "an integer >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps=0", "optimizer steps"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0", "a share of them in (0, 1]"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0", "batches per optimizer step"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0", "an integer >= 1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1", "a gradient norm >= 0"),
    ("trainer.precision=bogus", "trainer={", "'precision': 'bogus'"),
    ("trainer.threads=0", "trainer.threads=0", "auto | an integer >= 1"),
    ("model.width=0", "model.width=0", "an integer >= 1"),
    ("model.width=-3", "model.width=-3", "an integer >= 1"),
    ("model.layers=-1", "model.layers=-1", "an integer >= 0"),
    ("model.dropout=1.5", "model.dropout=1.5", "a probability in [0, 1)"),
    ("model.activation=foo", "model.activation='foo'", "relu | gelu"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas[1]=1.5", "a number in [0, 1)"),
    ("optimizer=momentum optimizer.momentum=1.5", "optimizer.momentum=1.5", "a number in [0, 1)"),
    ("early_stopping.patience=-1", "early_stopping.patience=-1", "an integer >= 0"),
]


@pytest.mark.parametrize("override,key,allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_and_exit_2_before_training(tmp_path, capsys, override, key, allowed):
    # python train.py's own entry point, in this process
    run_dir = tmp_path / "run"
    assert train_in_process(*QUICK, *override.split(), f"hydra.run.dir={run_dir}") == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lightopt: config error: {key}") and allowed in line, line
    assert not (run_dir / "results.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_trainer_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(*QUICK, "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("lightopt: config error: trainer={'accelerator': 'gpu'") and "gpu" in line, line


@pytest.mark.parametrize("override,key", [("data.batch_size=100000", "data.batch_size=100000"),
                                          ("schedule=linear schedule.total_steps=3", "schedule.total_steps=3")])
def test_bad_values_found_with_the_data_are_one_line_and_exit_2(tmp_path, override, key):
    run_dir = tmp_path / "run"
    proc = run_cli(*QUICK, *override.split(), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"lightopt: config error: {key}")
    assert "Traceback" not in proc.stderr and not (run_dir / "results.json").exists()


def test_a_schedule_as_long_as_the_run_or_longer_is_accepted(tmp_path):
    assert 0.0 <= run(compose_cfg(*QUICK, "schedule=cosine", "schedule.total_steps=10"), tmp_path) <= 1.0


def test_seed_null_means_no_seeding_and_trains(tmp_path):
    value = run(compose_cfg(*QUICK, "seed=null"), tmp_path)
    assert 0.0 <= value <= 1.0
