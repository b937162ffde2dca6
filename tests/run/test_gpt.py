"""Language modeling end to end: ``model=gpt`` on ``data=tokens`` (``experiment=gpt``), its param groups, compile."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from hydra.utils import instantiate

from lightopt.core.optimizers import create_optimizer
from lightopt.errors import ConfigError
from lightopt.run.training import build_model, run
from tests.helpers import compose_cfg

# experiment=gpt, shortened: about 450 training windows (14 batches of 32 x 64 tokens) x 4 epochs = 56 steps
LM_QUICK = [
    "experiment=gpt",
    "data.num_tokens=33000",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "logger=csv",
]

BLOCK_MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def results(path):
    return json.loads((path / "results.json").read_text())


def metric_rows(path):
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


def model_and_data(*overrides):
    cfg = compose_cfg(*LM_QUICK, *overrides)
    datamodule = instantiate(cfg.data)
    return cfg, build_model(cfg, datamodule), datamodule


def groups_by_name(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: [names[id(p)] for p in g["params"]] for g in optimizer.param_groups}


def unigram_entropy(cfg) -> float:
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm.unigram_entropy


def test_experiment_gpt_learns_the_token_stream_with_warmup_and_cosine(tmp_path):
    cfg = compose_cfg(*LM_QUICK)
    assert (cfg.model.vocab_size, cfg.model.block_size) == (None, None)  # taken from the data module
    run(cfg, tmp_path)
    res = results(tmp_path)
    assert res["status"] == "completed" and res["global_step"] == 56
    assert (res["objective"], res["direction"]) == ("val/loss", "minimize")
    loss = res["metrics"]["val/loss"]["final"]
    # from log(256) = 5.5 at the start to well below what token frequencies alone allow (about 3.2)
    assert loss < unigram_entropy(cfg) - 1.0
    assert res["metrics"]["val/ppl"]["final"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert 0.3 < res["metrics"]["val/acc"]["final"] < 1.0  # next-token accuracy
    rows = metric_rows(tmp_path)
    train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert train[0] > 4.5 and train[-1] < 2.2
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    warmup = 6  # 0.1 x 56 steps, rounded up
    assert len(lrs) == 56
    assert lrs[:warmup] == pytest.approx([3e-3 * (t + 1) / warmup for t in range(warmup)])
    assert all(a >= b for a, b in zip(lrs[warmup - 1:], lrs[warmup:], strict=False))  # cosine: never rises again
    assert lrs[-1] == pytest.approx(3e-4, rel=0.05)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(state["model.wte.weight"], state["model.lm_head.weight"])  # still tied after training


def test_gpt_trains_with_muon_on_the_block_matrices_only(tmp_path):
    cfg, model, _ = model_and_data("optimizer=muon")
    groups = groups_by_name(model, create_optimizer(model, cfg.optimizer, regularization=cfg.regularization))
    muon = [n for name, params in groups.items() if name.endswith("/muon") for n in params]
    adamw = [n for name, params in groups.items() if name.endswith("/adamw") for n in params]
    assert sorted(muon) == sorted(f"blocks.{i}.{m}" for i in range(2) for m in BLOCK_MATRICES)
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "blocks.0.attn.c_attn.bias"} <= set(adamw)
    assert len(muon) + len(adamw) == len(list(model.parameters()))  # every parameter once, the tied one too

    run(cfg, tmp_path)
    res = results(tmp_path)
    assert res["status"] == "completed"
    assert res["metrics"]["val/loss"]["final"] < unigram_entropy(cfg) - 1.0


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("tie", [True, False])
def test_tied_weights_are_in_exactly_one_group(optimizer, tie):
    cfg, model, _ = model_and_data(f"optimizer={optimizer}", f"model.tie_weights={tie}")
    opt = create_optimizer(model, cfg.optimizer, regularization=cfg.regularization)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    head_groups = [g["name"] for g in opt.param_groups if any(p is model.lm_head.weight for p in g["params"])]
    assert len(head_groups) == 1
    if optimizer == "muon":
        assert head_groups[0].endswith("/adamw")  # the LM head, tied or not, is never a Muon matrix


def test_weight_decay_skips_layernorms_and_biases_of_the_gpt():
    cfg, model, _ = model_and_data()  # experiment=gpt: AdamW with weight decay 0.1
    opt = create_optimizer(model, cfg.optimizer, regularization=cfg.regularization)
    groups = groups_by_name(model, opt)
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"default": 0.1, "no_decay": 0.0}
    decayed, skipped = set(groups["default"]), set(groups["no_decay"])
    assert decayed == {"wte.weight", "wpe.weight"} | {f"blocks.{i}.{m}" for i in range(2) for m in BLOCK_MATRICES}
    assert all(n.endswith(".bias") or ".ln_" in n or n.startswith("ln_f.") for n in skipped)
    assert {"ln_f.weight", "blocks.1.ln_2.weight", "blocks.0.mlp.c_fc.bias"} <= skipped


def test_model_must_cover_the_data_vocabulary_and_context(tmp_path):
    with pytest.raises(ConfigError, match=r"model.vocab_size=100.*data.vocab_size=256"):
        run(compose_cfg(*LM_QUICK, "model.vocab_size=100"), tmp_path)
    with pytest.raises(ConfigError, match=r"model.block_size=32.*data.block_size=64"):
        run(compose_cfg(*LM_QUICK, "model.block_size=32"), tmp_path)
    assert not (tmp_path / "results.json").exists()
    # a larger model than the data needs is fine (e.g. model=gpt2_small's 50304 ids on 256-token data)
    _, model, _ = model_and_data("model.vocab_size=300", "model.block_size=128")
    assert (model.vocab_size, model.block_size) == (300, 128)


def test_trainer_compile_compiles_the_model_in_place(tmp_path, monkeypatch):
    # the real torch.compile, with a backend that needs no C++ compiler (fast), recording the call
    calls = []
    real_compile = torch.compile

    def recording_compile(fn, **kwargs):
        calls.append(kwargs)
        return real_compile(fn, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch._dynamo.reset()
    run(compose_cfg(*LM_QUICK, "trainer.compile=reduce-overhead", "trainer.max_epochs=1"), tmp_path)
    torch._dynamo.reset()
    assert calls == [{"mode": "reduce-overhead"}]
    res = results(tmp_path)
    assert res["status"] == "completed" and res["global_step"] == 14
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "model.wte.weight" in state and not any("_orig_mod" in k for k in state)  # plain names


def test_compile_is_off_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile called"))
    run(compose_cfg(*LM_QUICK, "trainer.max_epochs=1", "data.num_tokens=5000"), tmp_path)
    assert results(tmp_path)["status"] == "completed"


@pytest.mark.slow
def test_gpt_trains_compiled_with_inductor(tmp_path):
    # the real thing on the CPU (inductor generates and compiles C++): about a minute of compilation
    torch._dynamo.reset()
    run(compose_cfg(*LM_QUICK, "trainer.compile=true", "trainer.max_epochs=2"), tmp_path)
    torch._dynamo.reset()
    res = results(tmp_path)
    assert res["status"] == "completed"
    assert res["metrics"]["val/loss"]["final"] < math.log(256) - 1.0
