"""MuonAdamW: the Muon/AdamW split, the two update rules, state round trips and learning-rate control."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from lightopt.core.muon import MuonAdamW
from lightopt.core.optimizers import create_optimizer, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.hidden1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.hidden2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, tokens):
        x = self.conv(self.embed(tokens).transpose(1, 2)).mean(-1)
        x = torch.relu(self.norm(self.hidden1(x)))
        return self.head(torch.relu(self.hidden2(x)))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (12, 6), generator=g), torch.randint(0, 5, (12,), generator=g)


def train(model, opt, steps=1, seed=0):
    for i in range(steps):
        x, y = batch(seed + i)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def make(model, **kw):
    cfg = {"_target_": "lightopt.core.muon.MuonAdamW", "lr": 1e-2, **kw}
    return create_optimizer(model, cfg, regularization={"weight_decay": 0.1})


def test_split_hidden_matrices_to_muon_everything_else_to_adamw():
    model = Net()
    opt = make(model)
    muon = [p for g in opt.param_groups if g["use_muon"] for p in g["params"]]
    adamw = [p for g in opt.param_groups if not g["use_muon"] for p in g["params"]]
    assert muon == [model.hidden1.weight, model.hidden2.weight]
    for p in (model.embed.weight, model.conv.weight, model.head.weight, model.norm.weight, model.hidden1.bias):
        assert any(p is q for q in adamw)
    assert len(muon) + len(adamw) == len(list(model.parameters()))
    names = [g["name"] for g in opt.param_groups]
    assert names == ["default/muon", "default/adamw", "no_decay/adamw"]


def test_split_with_lr_multipliers_names_groups():
    groups = param_groups(Net(), lr=1.0, weight_decay=0.1, lr_multipliers={"hidden2.*": 0.5}, split_muon=True)
    assert [g["name"] for g in groups] == [
        "default/muon",
        "default/adamw",
        "no_decay/adamw",
        "hidden2.*/muon",
        "hidden2.*/no_decay/adamw",
    ]


def test_plain_parameters_are_split_by_ndim():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = MuonAdamW([{"params": list(model.parameters()), "name": "all"}], lr=1e-2)
    assert [(g["name"], g["use_muon"], len(g["params"])) for g in opt.param_groups] == [
        ("all/muon", True, 2),
        ("all/adamw", False, 2),
    ]
    assert opt.param_groups[0]["eps"] == 1e-7 and opt.param_groups[1]["eps"] == 1e-8


def test_step_updates_both_halves():
    model = Net()
    opt = make(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, opt)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_halves_match_torch_muon_and_adamw():
    torch.manual_seed(0)
    w, b = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(6))
    w2, b2 = nn.Parameter(w.detach().clone()), nn.Parameter(b.detach().clone())
    ours = MuonAdamW([w, b], lr=0.01, weight_decay=0.1, adamw_betas=(0.8, 0.9))
    ref = [
        torch.optim.Muon([w2], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW([b2], lr=0.01, weight_decay=0.1, betas=(0.8, 0.9)),
    ]
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        gw, gb = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
        w.grad, b.grad, w2.grad, b2.grad = gw, gb, gw.clone(), gb.clone()
        ours.step()
        for o in ref:
            o.step()
    assert torch.equal(w, w2) and torch.equal(b, b2)


def test_muon_update_is_orthogonalized():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(16, 16))
    v, _ = torch.linalg.qr(torch.randn(16, 16))
    s = torch.linspace(1.0, 10.0, 16)  # condition number 10
    w = nn.Parameter(torch.randn(16, 16))
    w.grad = u @ torch.diag(s) @ v.T
    before = w.detach().clone()
    MuonAdamW([w], lr=0.01, adjust_lr_fn=None).step()
    sv = torch.linalg.svdvals((before - w.detach()).double())
    assert sv.max() / sv.min() < 2.0  # Newton-Schulz squeezes all singular values towards one value
    assert torch.allclose(sv.mean(), torch.tensor(0.01, dtype=torch.float64), rtol=0.3)


def test_state_dict_round_trip_gives_identical_steps():
    model = Net()
    opt = make(model)
    train(model, opt, steps=3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)

    clone = copy.deepcopy(model)
    restored = make(clone)
    buf.seek(0)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert [g["use_muon"] for g in restored.param_groups] == [g["use_muon"] for g in opt.param_groups]
    train(model, opt, steps=2, seed=10)
    train(clone, restored, steps=2, seed=10)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_change_in_param_groups_reaches_each_half():
    model = Net()
    opt = make(model)
    for g in opt.param_groups:
        g["lr"] = 0.0 if g["use_muon"] else g["lr"]
    before = model.hidden1.weight.detach().clone(), model.head.weight.detach().clone()
    train(model, opt)
    assert torch.equal(before[0], model.hidden1.weight)  # muon group frozen (lr 0: no decay either)
    assert not torch.equal(before[1], model.head.weight)

    for g in opt.param_groups:
        g["lr"] = 1e-2 if g["use_muon"] else 0.0
    before = model.hidden1.weight.detach().clone(), model.head.weight.detach().clone()
    train(model, opt)
    assert not torch.equal(before[0], model.hidden1.weight)
    assert torch.equal(before[1], model.head.weight)


def test_works_with_lr_scheduler():
    model = Net()
    opt = make(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0 if step >= 1 else 1.0)
    train(model, opt)
    sched.step()
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_zero_grad_clears_every_gradient():
    model = Net()
    opt = make(model)
    train(model, opt)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_adamw_lr_ratio_scales_only_adamw_and_leaves_groups_untouched():
    model = Net()
    opt = make(model, adamw_lr_ratio=0.0)
    before = model.hidden1.weight.detach().clone(), model.head.weight.detach().clone()
    train(model, opt)
    assert not torch.equal(before[0], model.hidden1.weight)
    assert torch.equal(before[1], model.head.weight)
    assert all(g["lr"] == 1e-2 for g in opt.param_groups)


def test_copy_pickle_and_added_groups():
    model = Net()
    opt = make(model)
    train(model, opt)
    copy.deepcopy(opt)
    restored = pickle.loads(pickle.dumps(opt))
    assert len(restored.param_groups) == len(opt.param_groups)

    extra = nn.Linear(3, 3)
    opt.add_param_group({"params": list(extra.parameters()), "lr": 0.1, "name": "extra"})
    assert [g["name"] for g in opt.param_groups[-2:]] == ["extra/muon", "extra/adamw"]
    extra(torch.randn(2, 3)).sum().backward()
    before = extra.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, extra.weight)


def test_muon_group_must_hold_matrices():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(3))], "use_muon": True}])


@pytest.mark.parametrize(
    "kw", [{"momentum": 1.0}, {"adjust_lr_fn": "nope"}, {"adamw_betas": (0.9, 1.5)}, {"ns_steps": 0}]
)
def test_bad_hyperparameters(kw):
    with pytest.raises(ValueError):
        MuonAdamW([nn.Parameter(torch.zeros(2, 2))], **kw)
