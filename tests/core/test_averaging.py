"""Weight averaging (averaging=ema|swa): the closed-form averages, what validation and checkpoints see, resume."""

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightopt
from lightopt.core.averaging import Averaging, AveragingSettings, check_averaging
from lightopt.errors import ConfigError
from lightopt.run.training import run
from tests.helpers import QUICK, assert_same_last_weights, compose_cfg


class Tiny(L.LightningModule):
    """One Linear layer and plain SGD; records its weights after every optimizer step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(3, 1)
        self.seen: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def weights(self):
        return torch.cat([p.detach().flatten() for p in self.net.parameters()]).clone()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen.append(self.weights())

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.validated.append(self.weights())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(callback, epochs=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    module = Tiny()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                        num_sanity_val_steps=0)
    trainer.fit(module, data, data)
    return module


def test_swa_is_the_equal_average_of_the_weights_from_its_start():
    module = fit(Averaging(AveragingSettings("swa", start=3)))
    expected = torch.stack(module.seen[3:]).mean(0)  # 8 steps: the weights after steps 3..7 (0-based)
    assert torch.allclose(module.weights(), expected, atol=1e-6)
    # validation after epoch 1 (4 steps) saw the average of the weights after step 3 alone, after epoch 2 all
    assert torch.allclose(module.validated[0], module.seen[3], atol=1e-6)
    assert torch.allclose(module.validated[1], expected, atol=1e-6)


def test_ema_follows_its_recursion_and_with_decay_0_is_no_averaging():
    module = fit(Averaging(AveragingSettings("ema", decay=0.5, warmup=False)))
    average = module.seen[0]
    for w in module.seen[1:]:
        average = 0.5 * average + 0.5 * w
    assert torch.allclose(module.weights(), average, atol=1e-6)
    plain = fit(Averaging(AveragingSettings("ema", decay=0.0)))
    assert torch.allclose(plain.weights(), plain.seen[-1]) and torch.allclose(plain.validated[0], plain.seen[3])


def test_the_ema_warmup_starts_close_to_the_weights():
    callback = Averaging(AveragingSettings("ema", decay=0.999))
    assert callback.decay_now() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    callback.updates = 10_000
    assert callback.decay_now() == 0.999


def test_a_users_trainer_gets_the_callback_from_a_config():
    callback = lightopt.weight_averaging({"averaging": {"name": "ema", "decay": 0.9}})
    assert isinstance(callback, Averaging) and callback.settings.decay == 0.9
    assert lightopt.weight_averaging({"name": "none"}) is None
    assert lightopt.weight_averaging({"name": "my-run", "optimizer": {}}) is None  # a config without the section


@pytest.mark.parametrize("section,key", [({"name": "ema", "decay": 1.0}, "averaging.decay"),
                                         ({"name": "swa", "start": 1.5}, "averaging.start"),
                                         ({"name": "swa", "lr": 0}, "averaging.lr"),
                                         ({"name": "ema", "lr": 0.1}, "averaging.lr"),
                                         ({"name": "polyak"}, "averaging.name")])
def test_bad_settings_are_config_errors(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_averaging(section)


def test_a_run_with_ema_reports_it_and_equals_no_averaging_at_decay_0(tmp_path):
    run(compose_cfg(*QUICK, "averaging=ema", "averaging.decay=0.0", "averaging.warmup=false"), tmp_path / "ema0")
    run(compose_cfg(*QUICK), tmp_path / "none")
    ema0 = json.loads((tmp_path / "ema0" / "results.json").read_text())
    none = json.loads((tmp_path / "none" / "results.json").read_text())
    assert ema0["averaging"]["name"] == "ema" and ema0["averaging"]["updates"] == ema0["global_step"] == 10
    assert none["averaging"] is None and ema0["metrics"] == none["metrics"]
    assert_same_last_weights(tmp_path / "ema0", tmp_path / "none")


def test_a_run_with_ema_resumes_the_average_exactly(tmp_path):
    common = [*QUICK, "averaging=ema", "averaging.decay=0.9", "schedule.total_steps=15"]  # one horizon for all
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    run(compose_cfg(*common, "trainer.max_epochs=3"), full)
    run(compose_cfg(*common, "trainer.max_epochs=1"), first)
    run(compose_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"), resumed)
    assert_same_last_weights(full, resumed)  # the averages
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (full, resumed))
    assert all(torch.equal(a["current_model_state"][k], v) for k, v in b["current_model_state"].items())
    results = json.loads((full / "results.json").read_text())
    assert results["value"] == json.loads((resumed / "results.json").read_text())["value"]
