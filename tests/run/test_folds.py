"""k-fold cross-validation (cv=kfold): the folds, the data modules' protocol, and cross-validated runs and sweeps."""

import csv
import json
import statistics

import lightning as L
import numpy as np
import pytest
import torch

from lightopt.errors import ConfigError
from lightopt.run.data import DigitsDataModule, RegressionDataModule, TokensDataModule
from lightopt.run.folds import CVSettings, check_cv, fold_samples, summarize, use_fold
from tests.helpers import QUICK, run_cli, train_in_process

KFOLD = {"name": "kfold", "folds": 5, "stratified": None, "shuffle": True, "seed": 0}


# --- settings ---------------------------------------------------------------------------------------------


def test_cv_none_or_absent_is_no_cross_validation():
    assert check_cv({"cv": {"name": "none"}}) is None
    assert check_cv({}) is None


def test_kfold_settings_are_checked():
    assert check_cv({"cv": KFOLD}) == CVSettings(folds=5, stratified=None, shuffle=True, seed=0)
    bad = [({"folds": 1}, "cv.folds=1"), ({"folds": 2.5}, "cv.folds=2.5"), ({"stratified": "yes"}, "cv.stratified"),
           ({"shuffle": "no"}, "cv.shuffle"), ({"seed": -1}, "cv.seed"), ({"fold": 3}, "cv.fold=3"),
           ({"name": "loo"}, "cv.name='loo'")]
    for change, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_cv({"cv": {**KFOLD, **change}})


def test_kfold_cannot_resume_from_a_checkpoint():
    with pytest.raises(ConfigError, match="cv=none when resuming"):
        check_cv({"cv": KFOLD, "ckpt_path": "last.ckpt"})


# --- the folds ----------------------------------------------------------------------------------------------


def test_folds_partition_the_samples_and_keep_class_proportions():
    data = DigitsDataModule()
    folds = fold_samples(data, CVSettings(5, None, True, 0), "classification")
    labels = data.cv_targets().numpy()
    assert len(folds) == 5
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals) == list(range(len(labels)))  # every sample validates exactly once
    for train, val in folds:
        assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)
        # stratified: each class is in every validation part in its overall share, give or take one sample
        for cls in range(10):
            assert abs((labels[val] == cls).sum() - (labels == cls).sum() / 5) <= 1
    # the folds depend on cv.seed alone: every trial of a sweep is judged on the same ones
    again = fold_samples(DigitsDataModule(seed=7), CVSettings(5, None, True, 0), "classification")
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again, strict=True))
    other = fold_samples(data, CVSettings(5, None, True, 1), "classification")
    assert not (folds[0][1] == other[0][1]).all()


def test_unshuffled_plain_folds_are_contiguous_parts():
    data = RegressionDataModule(n_samples=10)
    folds = fold_samples(data, CVSettings(5, None, False, 0), "regression")
    assert [val.tolist() for _, val in folds] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_stratified_folds_need_classes_and_a_sample_of_each_per_fold():
    with pytest.raises(ConfigError, match="cv.stratified=True.*the data has no classes"):
        fold_samples(RegressionDataModule(), CVSettings(5, True, True, 0), "regression")
    with pytest.raises(ConfigError, match=r"cv.folds=200.*at most 174 \(the samples of the smallest class\)"):
        fold_samples(DigitsDataModule(), CVSettings(200, None, True, 0), "classification")
    with pytest.raises(ConfigError, match=r"cv.folds=11.*at most the number of samples \(10\)"):
        fold_samples(RegressionDataModule(n_samples=10), CVSettings(11, None, True, 0), "regression")


def test_a_data_module_without_the_protocol_gets_a_clear_error():
    class Plain(L.LightningDataModule):
        pass

    with pytest.raises(ConfigError, match=r"Plain has no cv_targets and no set_fold.*cv_targets\(\) and set_fold"):
        fold_samples(Plain(), CVSettings(5, None, True, 0), "classification")


def test_a_data_module_serves_the_fold_it_is_given():
    data = DigitsDataModule(batch_size=1000)
    use_fold(data, CVSettings(3, None, True, 0), 1, "classification")
    data.setup()
    _, val = fold_samples(data, CVSettings(3, None, True, 0), "classification")[1]
    x_all, y_all = data._all_samples()
    x_val, y_val = next(iter(data.val_dataloader()))
    assert len(x_val) == len(val) and data.num_train == len(y_all) - len(val)
    assert torch.equal(x_val, x_all[torch.as_tensor(val)]) and torch.equal(y_val, y_all[torch.as_tensor(val)])


def test_token_windows_fold_by_window_and_measure_their_entropy_on_the_fold():
    data = TokensDataModule(vocab_size=16, block_size=8, num_tokens=2000)
    use_fold(data, CVSettings(2, None, True, 0), 0, data.task)
    data.setup()
    assert data.num_train == len(data.cv_targets()) // 2 and 0 < data.entropy_rate < data.uniform_entropy


def test_summary_is_the_mean_and_population_std_of_the_folds():
    summary = summarize(3, [0.9, 0.8, 0.7], ["a", "b", "c"])
    assert summary.mean == pytest.approx(0.8) and summary.std == pytest.approx(statistics.pstdev([0.9, 0.8, 0.7]))
    assert summary.as_dict()["run_dirs"] == ["a", "b", "c"]


# --- runs and sweeps ------------------------------------------------------------------------------------------


def test_a_cross_validated_run_trains_one_model_per_fold_and_reports_their_mean(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = train_in_process(*QUICK, "cv=kfold", "cv.folds=3", "console.summary=true", f"hydra.run.dir={run_dir}")
    assert code == 0
    res = json.loads((run_dir / "results.json").read_text())
    folds = [json.loads((run_dir / f"fold-{i}" / "results.json").read_text()) for i in (1, 2, 3)]
    values = [f["value"] for f in folds]
    assert res["cv"]["values"] == values and len(set(values)) > 1  # three models, three validation parts
    assert res["value"] == pytest.approx(statistics.fmean(values)) == pytest.approx(res["cv"]["mean"])
    assert res["cv"]["std"] == pytest.approx(statistics.pstdev(values))
    assert res["global_step"] == sum(f["global_step"] for f in folds) == 3 * 10  # 2 epochs of 5 batches a fold
    for i, fold in enumerate(folds, start=1):
        assert fold["status"] == "completed" and (run_dir / f"fold-{i}" / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run_dir / f"fold-{i}").rglob("metrics.csv"))) == 1  # each fold logs on its own
    out = capsys.readouterr().out
    assert out.count("lightopt run") == 1  # the summary of the first fold, then one results table for the run
    assert "mean ± std of 3 folds" in out and str(run_dir / "fold-3") in out


@pytest.mark.slow
def test_a_sweep_prunes_a_cross_validated_trial_after_its_first_poor_fold_on_ddp(tmp_path):
    # lr 1e-6 stays near chance and falls below the threshold after fold 1; lr 3e-3 passes every fold
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "trainer=ddp_cpu", "logger=csv", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                   "checkpoint.enabled=false", "cv=kfold", "cv.folds=2", "hydra/sweeper/sampler=grid",
                   "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.3",
                   "optimizer.lr=choice(0.000001,0.003)", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep_dir / "trials.csv") as f:
        trials = {t["optimizer.lr"]: t for t in csv.DictReader(f)}
    assert {lr: t["state"] for lr, t in trials.items()} == {"1e-06": "PRUNED", "0.003": "COMPLETE"}
    good = json.loads((sweep_dir / trials["0.003"]["number"] / "results.json").read_text())
    assert len(good["cv"]["values"]) == 2 and float(trials["0.003"]["cv_std"]) == pytest.approx(good["cv"]["std"])
    bad_dir = sweep_dir / trials["1e-06"]["number"]
    bad = json.loads((bad_dir / "results.json").read_text())
    assert bad["status"] == "pruned" and len(bad["cv"]["values"]) == 1 and not (bad_dir / "fold-2").exists()
    # rank 1 ran the folds with rank 0 (one fold of the pruned trial, two of the other) and stopped with it
    assert "rank 1: val/acc" in (bad_dir / "train_rank1.log").read_text()
    assert "over 1 folds (pruned)" in (bad_dir / "train_rank1.log").read_text()
