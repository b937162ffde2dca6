"""lightopt inside a user's own LightningModule: the configure_optimizers return value and the mixin."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

import lightopt
from lightopt.errors import ConfigError
from lightopt.schedules import PlateauLR, ScheduledLR

CFG = {
    "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.01},
    "schedule": {"name": "linear", "warmup": 2, "lr_final": 0.0},
    "regularization": {"weight_decay": 0.1, "l1_penalty": 0.0, "l2_penalty": 0.0},
}


class UserModule(L.LightningModule):
    """A module that does not inherit anything from lightopt."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = OmegaConf.create(cfg)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return lightopt.configure_optimizers(self, self.cfg)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)


def fit(module, epochs=2, **kwargs):
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", **kwargs)
    trainer.fit(module, loader(), loader())
    return trainer


def test_return_value_is_a_step_interval_scheduler_dict():
    module = UserModule(CFG)
    trainer = fit(module)
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "step" and config.frequency == 1
    assert isinstance(config.scheduler, ScheduledLR)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["default"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    # T = 2 epochs * 10 batches = 20 steps; warmup 2 then linear to 0 over 18
    expected = [0.01 * (t + 1) / 2 if t < 2 else 0.01 * (1 - (t - 2) / 18) for t in range(20)]
    assert module.lrs == pytest.approx(expected)


def test_plateau_names_its_monitor_and_needs_no_horizon():
    cfg = {**CFG, "schedule": {"name": "plateau", "monitor": "val/loss", "mode": "min", "patience": 0,
                               "factor": 0.5}}
    module = UserModule(cfg)  # not attached to a trainer
    out = lightopt.configure_optimizers(module, OmegaConf.create(cfg))
    assert out["lr_scheduler"]["monitor"] == "val/loss"
    assert out["lr_scheduler"]["interval"] == "step"
    assert isinstance(out["lr_scheduler"]["scheduler"], PlateauLR)
    # an unbounded run (early stopping decides when to stop) is fine for plateau
    trainer = fit(UserModule(cfg), epochs=-1, max_steps=30)
    assert trainer.global_step == 30


def test_unbounded_run_with_a_decay_schedule_is_an_error():
    with pytest.raises(ConfigError, match="schedule.total_steps.*horizon"):
        fit(UserModule(CFG), epochs=-1)


def test_sections_can_be_passed_one_by_one():
    module = UserModule(CFG)
    out = lightopt.configure_optimizers(module, optimizer=CFG["optimizer"], total_steps=10)
    assert set(out) == {"optimizer"}
    assert isinstance(out["optimizer"], torch.optim.AdamW)


class MixinModule(lightopt.LightoptMixin, UserModule):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.lightopt_cfg = self.cfg


def test_mixin_penalty_is_the_explicit_l1_term():
    cfg = {**CFG, "regularization": {"weight_decay": 0.0, "l1_penalty": 0.01, "l2_penalty": 0.0}}
    module = MixinModule(cfg)
    weights = [module.net[0].weight, module.net[2].weight]  # biases and LayerNorm are excluded
    assert float(module.penalty()) == pytest.approx(0.01 * sum(float(w.abs().sum()) for w in weights))
    assert MixinModule(CFG).penalty() == 0.0


def test_mixin_configures_optimizers():
    module = MixinModule(CFG)
    trainer = fit(module, epochs=1)
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    assert module.lrs[0] == pytest.approx(0.005)
