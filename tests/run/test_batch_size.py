"""tune=batch_size: Lightning's batch-size finder before training, then the lr finder at the size found."""

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightopt.errors import ConfigError
from lightopt.run.batch_size import BatchSizeSettings, check_batch_size_finder, find_batch_size
from lightopt.run.training import run
from tests.helpers import QUICK, compose_cfg


def results(path):
    return json.loads((path / "results.json").read_text())


def test_the_finder_doubles_up_to_the_training_split_and_the_run_trains_at_that_size(tmp_path):
    run(compose_cfg(*QUICK, "tune=batch_size", "tune.batch_size.init_val=128", "trainer.limit_train_batches=null"),
        tmp_path)
    res = results(tmp_path)
    # digits: 1438 training samples; on a CPU nothing runs out of memory, so 128, 256, 512 and 1024 all ran
    assert res["batch_size_find"] == {"found": 1024, "configured": 64, "cap": 1438, "mode": "power"}
    assert res["global_step"] == 2 * 2  # two batches (1024 + 414) per epoch, two epochs
    assert not list(tmp_path.glob(".scale_batch_size_*.ckpt"))  # Lightning's checkpoint of the search is gone


def test_max_val_caps_the_search(tmp_path):
    run(compose_cfg(*QUICK, "tune=batch_size", "tune.batch_size.init_val=16", "tune.batch_size.max_val=100"),
        tmp_path)
    assert results(tmp_path)["batch_size_find"]["found"] == 64


def test_with_lr_find_the_batch_size_comes_first_and_lr_scaling_applies_to_it(tmp_path):
    run(compose_cfg(*QUICK, "tune=[batch_size,lr_find]", "tune.batch_size.init_val=64", "tune.batch_size.max_val=256",
                    "lr_scaling.rule=linear",
                    "tune.num_training=40", "tune.min_lr=2.0e-3"), tmp_path)
    res = results(tmp_path)
    assert res["batch_size_find"]["found"] == 256
    # the lr the range test replaced: optimizer.lr 3e-3 scaled for the found batch, 256 / 64 = 4 times
    assert res["lr_find"]["configured_lr"] == pytest.approx(3e-3 * 4)
    assert res["lr"] == res["lr_find"]["suggestion"]


@pytest.mark.parametrize("section,key", [({"mode": "linear"}, "tune.batch_size.mode"),
                                         ({"init_val": 0}, "tune.batch_size.init_val"),
                                         ({"init_val": 64, "max_val": 32}, "tune.batch_size.init_val"),
                                         ({"trials": 3}, "tune.batch_size.trials")])
def test_bad_settings_are_config_errors(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_batch_size_finder({"tune": {"batch_size": section}})


def test_a_data_module_without_a_batch_size_gets_a_clear_error():
    class Fixed(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)

    module = L.LightningModule()
    with pytest.raises(ConfigError, match="Fixed has no batch_size to set"):
        find_batch_size(L.Trainer(logger=False), module, Fixed(), BatchSizeSettings())
