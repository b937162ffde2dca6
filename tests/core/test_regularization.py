"""Which parameters are decayed / penalized, the explicit penalty, and the regularization config group."""


import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lightopt.core.regularization import Penalty, build_penalty, is_no_decay, split_decay, validate_regularization
from lightopt.errors import ConfigError
from tests.helpers import CONF as ROOT_CONF

CONF = ROOT_CONF / "regularization"


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.LayerNorm(8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )


def names(named):
    return [n for n, _ in named]


def test_split_by_module_type_and_ndim():
    decay, no_decay = split_decay(net())
    assert names(decay) == ["0.weight", "3.weight", "5.weight"]
    # the LayerNorm and BatchNorm weights are excluded although they are not called "bias"
    assert names(no_decay) == ["0.bias", "1.weight", "1.bias", "3.bias", "4.weight", "4.bias", "5.bias"]


@pytest.mark.parametrize(
    "norm",
    [nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.BatchNorm2d(4), nn.InstanceNorm1d(4, affine=True), nn.RMSNorm(4)],
)
def test_every_norm_type_is_excluded(norm):
    for p in norm.parameters():
        assert is_no_decay(norm, p)


def test_ndim_rule_applies_to_any_module():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))  # 1-d: excluded whatever its name
            self.bias_matrix = nn.Parameter(torch.zeros(4, 4))  # 2-d: decayed although named bias*

    decay, no_decay = split_decay(Custom())
    assert names(decay) == ["bias_matrix"]
    assert names(no_decay) == ["gain"]


def test_exclusion_off_decays_everything():
    model = net()
    decay, no_decay = split_decay(model, exclude_bias_and_norm=False)
    assert no_decay == []
    assert names(decay) == [n for n, _ in model.named_parameters()]


def test_tied_and_frozen_parameters():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.Linear(10, 2))
    model[1].weight = model[0].weight  # tied
    model[2].bias.requires_grad_(False)
    decay, no_decay = split_decay(model)
    assert names(decay) == ["0.weight", "2.weight"]
    assert no_decay == []


def test_penalty_matches_hand_computation_over_decayed_params_only():
    model = net()
    l1, l2 = 1e-2, 3e-2
    pen = Penalty(model, l1_penalty=l1, l2_penalty=l2)
    ws = [model[0].weight, model[3].weight, model[5].weight]
    expected = sum(l1 * w.abs().sum() + l2 / 2 * w.pow(2).sum() for w in ws)
    assert torch.allclose(pen(), expected)

    pen().backward()
    assert torch.allclose(model[3].weight.grad, l1 * model[3].weight.sign() + l2 * model[3].weight.detach())
    assert model[3].bias.grad is None and model[1].weight.grad is None


def test_l2_gradient_equals_weight_decay_and_is_finite_at_zero():
    model = nn.Linear(3, 3, bias=False)
    nn.init.zeros_(model.weight)
    pen = build_penalty(model, {"l1_penalty": 1e-3, "l2_penalty": 0.5})
    pen().backward()
    assert torch.equal(model.weight.grad, torch.zeros(3, 3))  # no 0/0 from the norm at w = 0


def test_inactive_penalty_is_falsy_and_zero():
    pen = build_penalty(net(), {"weight_decay": 1e-4})
    assert not pen and not pen.active
    assert pen().item() == 0.0
    assert build_penalty(net(), {"l1_penalty": 1e-5}).active
    assert bool(build_penalty(net(), None)) is False


def test_penalty_respects_exclusion_flag():
    model = net()
    pen = build_penalty(model, {"l2_penalty": 1.0, "exclude_bias_and_norm": False})
    expected = sum(p.pow(2).sum() for p in model.parameters()) / 2
    assert torch.allclose(pen(), expected)


def test_defaults_and_normalization():
    assert validate_regularization(None) == {
        "weight_decay": 0.0,
        "l1_penalty": 0.0,
        "l2_penalty": 0.0,
        "exclude_bias_and_norm": True,
    }
    out = validate_regularization({"weight_decay": 1, "exclude_bias_and_norm": False})
    assert out["weight_decay"] == 1.0 and out["exclude_bias_and_norm"] is False


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"l1_penalty": -1e-5}, "regularization.l1_penalty"),
        ({"l2_penalty": "1e-4"}, "regularization.l2_penalty"),
        ({"weight_decay": True}, "regularization.weight_decay"),
        ({"weight_decay": float("inf")}, "regularization.weight_decay"),
        ({"exclude_bias_and_norm": "yes"}, "regularization.exclude_bias_and_norm"),
        ({"l3_penalty": 1.0}, "regularization.l3_penalty"),
    ],
)
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ConfigError) as e:
        build_penalty(net(), cfg)
    assert e.value.key == key
    assert str(e.value).startswith(f"{key}=")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("none", (0.0, 0.0, 0.0)),
        ("l2", (5e-4, 0.0, 0.0)),
        ("l1", (0.0, 1e-5, 0.0)),
        ("elastic", (0.0, 1e-5, 1e-4)),
    ],
)
def test_shipped_configs(name, expected):
    cfg = validate_regularization(OmegaConf.load(CONF / f"{name}.yaml"))
    assert (cfg["weight_decay"], cfg["l1_penalty"], cfg["l2_penalty"]) == expected
    assert cfg["exclude_bias_and_norm"] is True
