"""lightopt inside a user's own LightningModule: the configure_optimizers return value and the mixin."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

import lightopt
from lightopt.core import plugin
from lightopt.core.defaults import complete_section
from lightopt.core.regularization import REGULARIZATION_DEFAULTS
from lightopt.core.schedules import PlateauLR, ScheduledLR
from lightopt.errors import ConfigError
from tests.helpers import CONF

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


# --- partial sections: the rest comes from the shipped config files ----------------------------------------


class PartialModule(UserModule):
    """Names only the optimizer class and the schedule; everything else is the shipped defaults."""

    def configure_optimizers(self):
        return plugin.configure_optimizers(
            self, {"optimizer": {"_target_": "torch.optim.AdamW"}, "schedule": {"name": "cosine_restarts"}}
        )


def test_partial_sections_train_with_the_shipped_defaults():
    module = PartialModule({})
    trainer = fit(module, epochs=1, max_steps=8)
    assert trainer.global_step == 8
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 3e-3  # conf/optimizer/adamw.yaml, not AdamW's own 1e-3
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, ScheduledLR)
    # conf/schedule/cosine_restarts.yaml: cycles of 0.25 * T = 2 steps, no warmup, back to the peak each cycle
    expected = [3e-3 * 0.5 * (1 + math.cos(math.pi * (t % 2) / 2)) for t in range(8)]
    assert module.lrs == pytest.approx(expected)


def test_partial_plateau_without_an_objective_needs_a_monitor():
    cfg = {"optimizer": CFG["optimizer"], "schedule": {"name": "plateau"}}
    with pytest.raises(ConfigError, match=r"^schedule\.monitor=None") as e:
        plugin.configure_optimizers(UserModule(CFG), cfg)
    assert e.value.key == "schedule.monitor"


def test_partial_plateau_takes_monitor_and_mode_from_the_objective():
    cfg = {"objective": {"metric": "val/acc", "direction": "maximize"}, "optimizer": CFG["optimizer"],
           "schedule": {"name": "plateau"}}
    out = plugin.configure_optimizers(UserModule(CFG), OmegaConf.create(cfg))
    scheduler = out["lr_scheduler"]["scheduler"]
    assert out["lr_scheduler"]["monitor"] == "val/acc"
    assert scheduler.mode == "max" and scheduler.patience == 2 and scheduler.factor == 0.5  # plateau.yaml

    cfg = {"optimizer": CFG["optimizer"], "schedule": {"name": "plateau", "monitor": "val/loss"}}
    scheduler = plugin.configure_optimizers(UserModule(CFG), cfg)["lr_scheduler"]["scheduler"]
    assert scheduler.mode == "min"  # no objective to take the direction from


def test_partial_section_with_an_unknown_schedule_name_is_the_usual_error():
    cfg = {"optimizer": {"_target_": "torch.optim.AdamW"}, "schedule": {"name": "cosin"}}
    with pytest.raises(ConfigError, match=r"schedule\.name='cosin'.*cosine.*cosine_restarts.*wsd.*plateau"):
        plugin.configure_optimizers(UserModule(CFG), cfg, total_steps=10)


def test_complete_section_given_keys_win():
    adamw = OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / "adamw.yaml"))
    assert complete_section("optimizer", {"_target_": "torch.optim.AdamW", "lr": 0.01}) == {**adamw, "lr": 0.01}
    got = complete_section("schedule", {"name": "cosine_restarts", "warmup": 0.1})
    assert got["warmup"] == 0.1 and got["cycle_steps"] == 0.25
    assert complete_section("schedule", OmegaConf.create({"name": "cosine", "min_lr": "${x}", "x": 0.01}))["min_lr"] \
        == 0.01  # a DictConfig section is resolved


def test_complete_section_picks_the_file_of_the_same_class():
    # SGD is shipped as sgd, momentum and nesterov: the file named like the class
    assert complete_section("optimizer", {"_target_": "torch.optim.SGD"}) == {
        "_target_": "torch.optim.SGD", "lr": 0.1, "fused": None}
    assert complete_section("optimizer", {"_target_": "torch.optim.sgd.SGD"})["lr"] == 0.1  # same class
    # no muonadamw.yaml: the first file by name with that class
    muon = OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / "muon.yaml"))
    assert complete_section("optimizer", {"_target_": "lightopt.core.muon.MuonAdamW"}) == muon


@pytest.mark.parametrize(
    "group,section",
    [
        ("optimizer", {"_target_": "torch.optim.ASGD"}),  # no shipped file: the class's own defaults
        ("optimizer", {"_target_": "no_such_package.Opt"}),  # left to create_optimizer to reject
        ("schedule", {"name": "my_schedules.halving", "every": 5}),  # a user function has no defaults
        ("schedule", {"name": "cosin"}),
    ],
)
def test_complete_section_without_a_shipped_file_is_unchanged(group, section):
    assert complete_section(group, section) == section
    assert complete_section(group, None) is None


def test_complete_section_drops_the_shipped_alternative_of_a_given_key():
    # exponential takes exactly one of decay_rate and lr_final; the shipped file sets lr_final
    assert "lr_final" not in complete_section("schedule", {"name": "exponential", "decay_rate": 0.05})
    assert complete_section("schedule", {"name": "exponential"})["lr_final"] == 1e-5


def test_complete_regularization_is_no_regularization():
    none = OmegaConf.to_container(OmegaConf.load(CONF / "regularization" / "none.yaml"))
    assert REGULARIZATION_DEFAULTS == none
    assert complete_section("regularization", {"weight_decay": 0.1}) == {**none, "weight_decay": 0.1}


def test_complete_section_rejects_what_is_not_a_section():
    with pytest.raises(ConfigError) as e:
        complete_section("schedule", "cosine")
    assert e.value.key == "schedule"
    with pytest.raises(ValueError, match="no shipped defaults"):
        complete_section("trainer", {})


def test_lr_layer_decay_reaches_a_users_module_and_its_schedule_keeps_the_ratios():
    module = UserModule({**CFG, "lr_layer_decay": 0.5})
    trainer = fit(module, epochs=1)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    # the output Linear at depth 0, the first Linear and its LayerNorm at depth 1: half its lr at every step
    assert lrs["default/depth1"] == pytest.approx(0.5 * lrs["default/depth0"])
    assert lrs["no_decay/depth1"] == pytest.approx(lrs["default/depth1"])
