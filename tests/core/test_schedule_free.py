"""Schedule-free optimizers: train mode for steps, eval mode (the averaged iterate) for validation, checkpoints
and the end of training, in a user's own module as in lightopt's run."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import lightopt
from lightopt.core.schedule_free import ScheduleFreeModes
from lightopt.errors import ConfigError
from lightopt.run.training import run
from tests.helpers import QUICK, assert_same_last_weights, compose_cfg

SF = {"optimizer": {"_target_": "schedulefree.AdamWScheduleFree", "lr": 1e-2}, "schedule": {"name": "constant"}}


class Own(L.LightningModule):
    """A user's module: lightopt.configure_optimizers and nothing else."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        self.modes = {"train": set(), "val": set()}

    def _mode(self):
        return self.trainer.optimizers[0].param_groups[0]["train_mode"]

    def training_step(self, batch, batch_idx):
        self.modes["train"].add(self._mode())
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.modes["val"].add(self._mode())

    def configure_optimizers(self):
        return lightopt.configure_optimizers(self, self.cfg)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


def fit(module, tmp_path, **kwargs):
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, **kwargs)
    trainer.fit(module, data(), data())
    return trainer


def test_a_users_module_steps_in_train_mode_and_validates_and_ends_in_eval_mode(tmp_path):
    module = Own(SF)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, save_on_train_epoch_end=True)
    trainer = fit(module, tmp_path, callbacks=[checkpoint])
    assert sum(isinstance(cb, ScheduleFreeModes) for cb in trainer.callbacks) == 1  # added by configure_optimizers
    assert module.modes == {"train": {True}, "val": {False}}
    opt = trainer.optimizers[0]
    assert opt.param_groups[0]["train_mode"] is False  # the module holds the averaged weights x
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in module.state_dict().items())  # the checkpoint holds x too
    x = [p.detach().clone() for p in module.parameters()]
    opt.train()  # y, where the steps are taken, differs from x
    assert any(not torch.equal(a, p) for a, p in zip(x, module.parameters(), strict=True))


def test_a_schedule_other_than_constant_is_refused():
    with pytest.raises(ConfigError, match=r"schedule='cosine'.*needs no learning-rate schedule.*schedule=constant"):
        fit(Own({**SF, "schedule": {"name": "cosine"}}), None)


def test_a_run_with_schedule_free_adamw_resumes_exactly(tmp_path):
    common = [*QUICK, "optimizer=adamw_schedulefree", "schedule=constant", "model.dropout=0.2"]
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    run(compose_cfg(*common, "trainer.max_epochs=3"), full)
    run(compose_cfg(*common, "trainer.max_epochs=1"), first)
    run(compose_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"), resumed)
    assert_same_last_weights(full, resumed)
