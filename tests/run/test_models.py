"""Shapes and structure of the model zoo."""

import math

import pytest
import torch
from torch import nn

from lightopt.run.models import CNN, GPT, MLP, LinearModel


def test_mlp_layers_width_dropout():
    m = MLP(64, 10, layers=3, width=32, activation="gelu", dropout=0.1)
    linears = [l for l in m if isinstance(l, nn.Linear)]
    assert [l.out_features for l in linears] == [32, 32, 32, 10]
    assert sum(isinstance(l, nn.Dropout) for l in m) == 3
    assert sum(isinstance(l, nn.GELU) for l in m) == 3
    assert m(torch.randn(5, 64)).shape == (5, 10)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="model.activation='swishy'.*relu"):
        MLP(4, 2, activation="swishy")


def test_linear_model_is_one_affine_map():
    m = LinearModel(1, 1)
    assert m(torch.ones(3, 1)).shape == (3, 1)
    assert sum(p.numel() for p in m.parameters()) == 2


def test_cnn_on_flat_digits():
    m = CNN(64, 10)
    assert m(torch.randn(4, 64)).shape == (4, 10)
    with pytest.raises(ValueError, match="image_shape"):
        CNN(60, 10)


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})


def test_gpt_maps_token_ids_to_next_token_logits():
    m = tiny_gpt()
    assert m(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)
    assert m(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)  # shorter than block_size is fine
    with pytest.raises(ValueError, match="block_size=16"):
        m(torch.randint(0, 50, (1, 17)))
    with pytest.raises(ValueError, match="n_embd=30.*n_head=4"):
        GPT(50, 16, n_head=4, n_embd=30)


def test_gpt_attention_is_causal():
    # changing token j leaves the logits of every position before j unchanged and changes those from j on
    m = tiny_gpt().eval()
    x = torch.randint(0, 50, (2, 16))
    j = 9
    x2 = x.clone()
    x2[:, j] = (x2[:, j] + 1) % 50
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, :j], b[:, :j])
    assert not torch.allclose(a[:, j:], b[:, j:])
    # the same by gradients: the output at position 3 has no gradient w.r.t. the embeddings of later positions
    emb = m.wte(x).detach().requires_grad_(True)
    h = m.drop(emb + m.wpe(torch.arange(16)))
    for block in m.blocks:
        h = block(h)
    m.lm_head(m.ln_f(h))[:, 3].sum().backward()
    assert emb.grad[:, 4:].abs().max() == 0 and emb.grad[:, :4].abs().max() > 0


def test_gpt_tied_weights_are_one_parameter():
    tied, untied = tiny_gpt(), tiny_gpt(tie_weights=False)
    assert tied.tied and tied.lm_head.weight is tied.wte.weight
    assert not untied.tied
    assert len(list(untied.parameters())) == len(list(tied.parameters())) + 1
    assert untied.num_params() - tied.num_params() == 50 * 32
    assert "lm_head.weight" not in dict(tied.named_parameters())  # listed once, as wte.weight
    assert {"wte.weight", "lm_head.weight"} <= set(tied.state_dict())  # both names load and save


def test_gpt_is_initialized_like_gpt2():
    m = tiny_gpt(n_layer=8, n_embd=64, vocab_size=512, block_size=64)
    residual = 0.02 / math.sqrt(2 * 8)
    for block in m.blocks:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual, rel=0.15)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.15)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.all(block.attn.c_attn.bias == 0) and torch.all(block.ln_1.weight == 1)
    assert m.wte.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert m.wpe.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert m.lm_head.bias is None


def test_gpt_without_bias_has_no_bias_parameters():
    m = tiny_gpt(bias=False)
    assert not [n for n, _ in m.named_parameters() if n.endswith(".bias")]


def test_gpt_sizes_from_config():
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    tiny = instantiate(compose_cfg("model=gpt", "data=tokens").model, vocab_size=256, block_size=64)
    assert tiny.num_params() == 120_576
    with torch.device("meta"):  # shapes only: no 0.5 GB of weights to allocate and initialize
        small = instantiate(compose_cfg("model=gpt2_small").model)
    assert (small.vocab_size, small.block_size, small.n_layer) == (50304, 1024, 12)
    assert small.num_params() == 124_475_904  # GPT-2 small, tied embedding, vocab padded to 50304
    assert small.num_params(non_embedding=True) == 123_689_472


def test_gpt_traces_into_one_graph():
    # torch.compile captures the whole forward: no graph breaks (a fast check, without a compiler)
    m = tiny_gpt(n_layer=1)
    explained = torch._dynamo.explain(m)(torch.randint(0, 50, (2, 16)))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
