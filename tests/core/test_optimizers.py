"""Building optimizers from config: every shipped choice, param groups, weight-decay exclusion, errors."""

import sys
import types

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from lightopt.core.optimizers import OptimizerSpec, auto_fused, check_optimizer, create_optimizer, param_groups
from lightopt.core.schedule_free import is_schedule_free
from lightopt.errors import ConfigError
from tests.helpers import CONF

OPTIMIZERS = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
L2 = {"weight_decay": 0.1}


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 4))


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )


def load(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml"))


def train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.randn(8, 1, 4, 4) if isinstance(model[0], nn.Conv2d) else torch.randn(8, 8)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), torch.arange(8) % 4).backward()
    opt.step()


def by_name(opt_or_groups) -> dict:
    groups = opt_or_groups.param_groups if hasattr(opt_or_groups, "param_groups") else opt_or_groups
    return {g["name"]: g for g in groups}


def test_every_choice_is_shipped():
    expected = {"sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta", "adamax"}
    expected |= {"nadam", "radam", "adafactor", "muon"}
    assert expected <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_shipped_config_builds_and_steps(name):
    cfg = load(name)
    assert "weight_decay" not in cfg  # comes from the regularization group
    models = [mlp(), convnet()] if name == "muon" else [mlp()]
    for model in models:
        opt = create_optimizer(model, cfg, regularization=L2)
        assert opt.param_groups[0]["lr"] == cfg["lr"]
        if is_schedule_free(opt):  # outside a Trainer its user switches the modes (in one: ScheduleFreeModes)
            opt.train()
        before = [p.detach().clone() for p in model.parameters()]
        train_step(model, opt)
        changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
        assert all(changed), f"{name}: some parameters did not move"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_shipped_config_is_documented(name):
    lines = (CONF / "optimizer" / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("# ")
    for line in lines:
        if line.strip() and not line.startswith("#") and not line.startswith("_target_"):
            assert "#" in line, f"{name}.yaml: key without a comment: {line}"


def test_composed_with_hydra():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+optimizer=adamw", "+regularization=l2"])
    opt = create_optimizer(mlp(), cfg.optimizer, regularization=cfg.regularization)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert by_name(opt)["default"]["weight_decay"] == 5e-4


def test_bias_and_norm_params_are_not_decayed():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.LayerNorm(16), nn.Linear(16, 4))
    opt = create_optimizer(model, {"_target_": "torch.optim.SGD", "lr": 0.1}, regularization=L2)
    groups = by_name(opt)
    assert list(groups) == ["default", "no_decay"]
    assert groups["default"]["weight_decay"] == 0.1
    assert groups["default"]["params"] == [model[0].weight, model[3].weight]
    assert groups["no_decay"]["weight_decay"] == 0.0
    no_decay = groups["no_decay"]["params"]
    for p in (model[0].bias, model[1].weight, model[1].bias, model[2].weight, model[2].bias, model[3].bias):
        assert any(p is q for q in no_decay)
    assert len(no_decay) == 6


def test_exclusion_off_is_one_decayed_group():
    model = mlp()
    opt = create_optimizer(
        model, {"_target_": "torch.optim.SGD", "lr": 0.1}, regularization={**L2, "exclude_bias_and_norm": False}
    )
    assert [g["name"] for g in opt.param_groups] == ["default"]
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("reg", [None, {"weight_decay": 0.0, "l1_penalty": 0.0}])
def test_adamw_does_not_decay_without_regularization(reg):
    opt = create_optimizer(mlp(), load("adamw"), regularization=reg)
    # one group: without weight decay there is nothing to exclude biases and norms from
    assert [(g["name"], g["weight_decay"]) for g in opt.param_groups] == [("default", 0.0)]


def test_lr_multipliers_make_their_own_groups():
    model = mlp()
    opt = create_optimizer(model, {"_target_": "torch.optim.SGD", "lr": 0.1}, lr_multipliers={"3.*": 10},
                           regularization={"weight_decay": 1e-4})
    groups = by_name(opt)
    assert list(groups) == ["default", "no_decay", "3.*", "3.*/no_decay"]
    assert groups["3.*"]["params"] == [model[3].weight]
    assert groups["3.*/no_decay"]["params"] == [model[3].bias]
    assert groups["3.*"]["lr"] == pytest.approx(1.0) and groups["3.*/no_decay"]["lr"] == pytest.approx(1.0)
    assert groups["default"]["lr"] == 0.1 and groups["default"]["params"] == [model[0].weight]


def test_first_matching_multiplier_wins():
    model = mlp()
    groups = by_name(param_groups(model, lr=1.0, weight_decay=0.1,
                                  lr_multipliers={"3.weight": 5.0, "3.*": 2.0, "0.*": 0.5}))
    assert groups["3.weight"]["params"] == [model[3].weight] and groups["3.weight"]["lr"] == 5.0
    assert groups["3.*/no_decay"]["params"] == [model[3].bias] and groups["3.*/no_decay"]["lr"] == 2.0
    assert "3.*" not in groups  # empty groups are dropped
    assert groups["0.*"]["lr"] == 0.5


def test_unmatched_multiplier_pattern_is_an_error():
    with pytest.raises(ConfigError, match=r"lr_multipliers='head\.\*'.*0\.weight") as e:
        create_optimizer(mlp(), {"_target_": "torch.optim.SGD", "lr": 0.1}, lr_multipliers={"head.*": 10})
    assert e.value.key == "lr_multipliers"


def test_groups_are_deterministic_and_cover_each_param_once():
    model = mlp()
    a = param_groups(model, lr=0.1, weight_decay=0.1, lr_multipliers={"3.*": 2})
    b = param_groups(model, lr=0.1, weight_decay=0.1, lr_multipliers={"3.*": 2})
    assert [(g["name"], [id(p) for p in g["params"]]) for g in a] == [
        (g["name"], [id(p) for p in g["params"]]) for g in b
    ]
    ids = [id(p) for g in a for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_tied_and_frozen_parameters_appear_once_or_not_at_all():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    model[1].weight = model[0].weight
    model[1].bias.requires_grad_(False)
    groups = param_groups(model, lr=0.1)
    assert [len(g["params"]) for g in groups] == [1]
    create_optimizer(model, {"_target_": "torch.optim.AdamW", "lr": 0.1})  # no duplicate-parameter error


@pytest.mark.parametrize("lr", [0, -1, "abc", True, float("nan"), None])
def test_bad_lr_is_rejected(lr):
    with pytest.raises(ConfigError) as e:
        create_optimizer(mlp(), {"_target_": "torch.optim.SGD", "lr": lr})
    assert e.value.key == "optimizer.lr"


def test_lr_given_as_string_gets_a_hint():
    # plain YAML 1.1 loaders (not OmegaConf's) read 1e-3 as a string
    with pytest.raises(ConfigError, match="1.0e-3"):
        create_optimizer(mlp(), {"_target_": "torch.optim.Adam", "lr": "1e-3"})


def test_missing_lr_uses_the_class_default():
    opt = create_optimizer(mlp(), {"_target_": "torch.optim.Adadelta"})
    assert opt.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize(
    "target", ["torch.optim.NoSuchOptimizer", "no_such_package.Opt", "torch.nn.Linear", "torch.optim", None]
)
def test_bad_target_is_rejected(target):
    with pytest.raises(ConfigError, match="torch.optim.Optimizer subclass") as e:
        create_optimizer(mlp(), {"_target_": target, "lr": 0.1})
    assert e.value.key == "optimizer._target_"


def test_unknown_argument_names_the_key_and_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"optimizer\.betas=.*momentum.*nesterov") as e:
        create_optimizer(mlp(), {"_target_": "torch.optim.SGD", "lr": 0.1, "betas": [0.9, 0.99]})
    assert e.value.key == "optimizer.betas"


def test_weight_decay_belongs_to_the_regularization_group():
    with pytest.raises(ConfigError, match="regularization.weight_decay") as e:
        create_optimizer(mlp(), {"_target_": "torch.optim.AdamW", "lr": 0.1, "weight_decay": 0.1})
    assert e.value.key == "optimizer.weight_decay"


def test_value_rejected_by_the_class_is_a_config_error():
    with pytest.raises(ConfigError, match="beta"):
        create_optimizer(mlp(), {"_target_": "torch.optim.Adam", "lr": 0.1, "betas": [2.0, 0.9]})


def test_any_optimizer_class_by_dotted_path(monkeypatch):
    class TinySGD(torch.optim.Optimizer):
        def __init__(self, params, lr=0.1, scale=1.0):
            super().__init__(params, {"lr": lr, "scale": scale, "weight_decay": 0.0})

        @torch.no_grad()
        def step(self, closure=None):
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-g["lr"] * g["scale"])

    fake = types.ModuleType("lightopt_fake_optimizers")
    fake.TinySGD = TinySGD
    monkeypatch.setitem(sys.modules, "lightopt_fake_optimizers", fake)
    model = mlp()
    opt = create_optimizer(model, {"_target_": "lightopt_fake_optimizers.TinySGD", "lr": 0.5, "scale": 2.0})
    assert isinstance(opt, TinySGD) and opt.param_groups[0]["scale"] == 2.0
    train_step(model, opt)

    # a torch optimizer without a shipped config
    assert isinstance(create_optimizer(mlp(), {"_target_": "torch.optim.ASGD", "lr": 0.01}), torch.optim.ASGD)


def test_accepts_omegaconf_config():
    opt = create_optimizer(mlp(), OmegaConf.create(load("adam")), regularization=OmegaConf.create(L2))
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_auto_fused_rule():
    def fake(device: str, floating: bool = True):
        return types.SimpleNamespace(device=torch.device(device), is_floating_point=lambda: floating)

    assert auto_fused([fake("cuda"), fake("cuda")]) is True
    assert auto_fused([fake("cpu"), fake("cpu")]) is True
    assert auto_fused([fake("cuda"), fake("cpu")]) is None  # one kernel cannot span device types
    assert auto_fused([fake("cuda", floating=False)]) is None
    assert auto_fused([fake("meta")]) is None  # no fused kernels there
    assert auto_fused([]) is None


def test_fused_is_the_default_where_the_class_has_it_and_explicit_wins():
    assert all(g["fused"] is True for g in create_optimizer(mlp(), load("adamw")).param_groups)
    for name in ("sgd", "momentum", "adam", "adagrad"):
        assert create_optimizer(mlp(), load(name)).param_groups[0]["fused"] is True, name
    opt = create_optimizer(mlp(), {**load("adamw"), "fused": False})
    assert all(g["fused"] is False for g in opt.param_groups)
    assert "fused" not in create_optimizer(mlp(), load("rmsprop")).param_groups[0]


def test_fused_cpu_step_matches_the_per_tensor_step():
    a, b = mlp(), mlp()  # same seed: same weights
    opts = [create_optimizer(a, load("adamw")), create_optimizer(b, {**load("adamw"), "fused": False})]
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, opt in zip((a, b), opts, strict=True):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fused_choice_reaches_the_optimizer(monkeypatch):
    import lightopt.core.optimizers as optimizers

    monkeypatch.setattr(optimizers, "auto_fused", lambda params: True)
    model = mlp()
    opt = create_optimizer(model, load("adamw"))
    assert all(g["fused"] is True for g in opt.param_groups)
    train_step(model, opt)  # torch's fused AdamW also runs on CPU
    # never combined with an explicit foreach
    opt = create_optimizer(mlp(), {**load("adam"), "foreach": True})
    assert all(g["fused"] is None for g in opt.param_groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "muon"])
def test_fused_on_cuda(name):
    model = mlp().cuda()
    opt = create_optimizer(model, load(name), regularization=L2)
    assert all(g["fused"] is True for g in opt.param_groups if not g.get("use_muon"))
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(8, 8, device="cuda")), torch.arange(8, device="cuda") % 4).backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


# --- checking without a model -------------------------------------------------------------------------------


def test_check_optimizer_needs_no_model():
    spec = check_optimizer(OmegaConf.create(load("adamw")))
    assert isinstance(spec, OptimizerSpec)
    assert spec.cls is torch.optim.AdamW and spec.lr == 3e-3 and spec.target == "torch.optim.AdamW"
    assert spec.kwargs == {k: v for k, v in load("adamw").items() if k != "_target_"}
    # the class's default lr when the config has none
    assert check_optimizer({"_target_": "torch.optim.Adadelta"}).lr == 1.0


def test_create_optimizer_builds_a_checked_spec():
    spec = check_optimizer({"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9})
    opt = create_optimizer(mlp(), spec, regularization=L2)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert spec.kwargs == {"lr": 0.1, "momentum": 0.9}  # building leaves the spec as it was


@pytest.mark.parametrize(
    "cfg,key",
    [
        ({"_target_": "torch.optim.SGD", "lr": 0}, "optimizer.lr"),
        ({"_target_": "torch.nn.Linear", "lr": 0.1}, "optimizer._target_"),
        ({"_target_": "torch.optim.SGD", "lr": 0.1, "betas": [0.9, 0.99]}, "optimizer.betas"),
        ({"_target_": "torch.optim.AdamW", "lr": 0.1, "weight_decay": 0.1}, "optimizer.weight_decay"),
        ({"_target_": "torch.optim.AdamW", "params": []}, "optimizer.params"),
        ("adamw", "optimizer"),
    ],
)
def test_check_optimizer_rejects_what_create_optimizer_rejects(cfg, key):
    with pytest.raises(ConfigError) as e:
        check_optimizer(cfg)
    assert e.value.key == key


# --- layer-wise lr decay ----------------------------------------------------------------------------------


def depth_lrs(groups):
    """{parameter id: lr} over the groups."""
    return {id(p): g["lr"] for g in groups for p in g["params"]}


def test_layer_decay_gives_each_linear_layer_of_an_mlp_lr0_times_decay_to_its_depth():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = param_groups(model, lr=1.0, weight_decay=0.1, lr_layer_decay=0.5)
    lrs = depth_lrs(groups)
    expected = {"0.weight": 0.25, "0.bias": 0.25, "1.weight": 0.25, "1.bias": 0.25,  # the norm: its layer's
                "3.weight": 0.5, "3.bias": 0.5, "5.weight": 1.0, "5.bias": 1.0}
    assert {n: lrs[id(p)] for n, p in model.named_parameters()} == expected
    # still one group per (decay, depth): biases and norms without weight decay at every depth
    assert sorted(g["name"] for g in groups) == sorted(
        f"{kind}/depth{d}" for kind in ("default", "no_decay") for d in (0, 1, 2))
    assert all(g["weight_decay"] == (0.1 if g["name"].startswith("default") else 0.0) for g in groups)


def test_layer_decay_composes_with_lr_multipliers_and_one_means_no_decay():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    lrs = depth_lrs(param_groups(model, lr=1.0, lr_multipliers={"2.*": 10.0}, lr_layer_decay=0.1))
    assert lrs[id(model[2].weight)] == 10.0 and lrs[id(model[0].weight)] == pytest.approx(0.1)
    flat = depth_lrs(param_groups(model, lr=1.0, lr_layer_decay=1.0))
    assert set(flat.values()) == {1.0}


def test_gpt_counts_blocks_from_the_head_and_puts_the_embeddings_deepest():
    from lightopt.run.models import GPT

    gpt = GPT(vocab_size=16, block_size=8, n_layer=3, n_embd=16)
    lrs = depth_lrs(param_groups(gpt, lr=1.0, lr_layer_decay=0.5))
    by_name = dict(gpt.named_parameters())
    assert lrs[id(by_name["ln_f.weight"])] == 1.0
    assert [lrs[id(by_name[f"blocks.{i}.attn.c_attn.weight"])] for i in range(3)] == [0.125, 0.25, 0.5]
    assert lrs[id(by_name["wte.weight"])] == lrs[id(by_name["wpe.weight"])] == 0.0625  # the tied head with them


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "x", True])
def test_bad_layer_decay_is_a_config_error(value):
    with pytest.raises(ConfigError, match="lr_layer_decay"):
        param_groups(nn.Linear(2, 2), lr=1.0, lr_layer_decay=value)


def test_a_models_own_depths_must_cover_every_parameter():
    class Partial(nn.Sequential):
        def lr_layer_depths(self):
            return {"0.weight": 1}

    with pytest.raises(ConfigError, match=r"lr_layer_decay.*gives none for 0.bias"):
        param_groups(Partial(nn.Linear(2, 2)), lr=1.0, lr_layer_decay=0.5)
