"""In-memory batching and the shipped data modules."""

import math

import pytest
import torch

from lightopt.run.data import DigitsDataModule, RegressionDataModule, TensorBatches, TokensDataModule, markov_windows


def test_batches_cover_every_row_once_per_epoch():
    x = torch.arange(10).float().unsqueeze(1)
    batches = TensorBatches(x, x.squeeze(1).long(), batch_size=4, shuffle=True, seed=3)
    assert len(batches) == 3
    rows = torch.cat([b[0] for b in batches]).squeeze(1)
    assert sorted(rows.tolist()) == list(range(10))
    assert [len(b[0]) for b in batches] == [4, 4, 2]


def test_batches_are_views_not_collated_copies():
    x = torch.randn(8, 3)
    first = next(iter(TensorBatches(x, x, batch_size=4)))[0]
    assert first.data_ptr() == x.data_ptr()  # no shuffle: a slice of the original storage


def test_epoch_order_depends_only_on_seed_and_epoch():
    x = torch.arange(50).float()
    a = TensorBatches(x, x, 8, shuffle=True, seed=1)
    b = TensorBatches(x, x, 8, shuffle=True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(torch.cat([t for t, _ in a]), torch.cat([t for t, _ in b]))
    b.set_epoch(4)
    assert not torch.equal(torch.cat([t for t, _ in a]), torch.cat([t for t, _ in b]))


def test_ranks_get_disjoint_equal_shards():
    x = torch.arange(11).float()
    shards = [TensorBatches(x, x, 2, shuffle=True, seed=0, rank=r, world_size=2) for r in (0, 1)]
    rows = [torch.cat([t for t, _ in s]).tolist() for s in shards]
    assert len(rows[0]) == len(rows[1]) == 5
    assert not set(rows[0]) & set(rows[1])
    assert len(shards[0]) == len(shards[1])


@pytest.mark.parametrize("n,world,batch", [(11, 2, 2), (10, 3, 4), (359, 2, 32), (7, 4, 1)])
def test_evaluation_shards_cover_every_row_once_in_as_many_batches_on_every_rank(n, world, batch):
    x = torch.arange(n).float()
    shards = [TensorBatches(x, x, batch, rank=r, world_size=world, even=False) for r in range(world)]
    rows = [[t.tolist() for t, _ in s] for s in shards]
    assert sorted(v for r in rows for b in r for v in b) == list(range(n))  # every row, once
    assert len({len(r) for r in rows}) == 1 and len({len(s) for s in shards}) == 1  # no rank waits for another
    sizes = [len(b) for r in rows for b in r]
    assert min(sizes) >= 1 and max(sizes) <= max(batch, 2)  # one row over a batch of 1, where shares differ


def test_evaluation_shards_need_a_row_per_rank():
    with pytest.raises(ValueError, match="3 rows cannot be shared by 4 processes: every process needs"):
        TensorBatches(torch.zeros(3), torch.zeros(3), 2, world_size=4, even=False)


def test_digits_split_shapes_and_ranges():
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 64) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == torch.long and int(y.max()) < 10
    assert dm.num_train + sum(len(b[0]) for b in dm.val_dataloader()) == 1797


def test_regression_data_follows_the_line():
    dm = RegressionDataModule(n_samples=2000, noise=0.0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert torch.allclose(y, 2 * x + 1, atol=1e-5)


def tokens(**kw) -> TokensDataModule:
    dm = TokensDataModule(**{"vocab_size": 64, "block_size": 16, "num_tokens": 20_000, "batch_size": 8, **kw})
    dm.setup("fit")
    return dm


def test_tokens_targets_are_inputs_shifted_by_one():
    dm = tokens()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert 0 <= int(x.min()) and int(torch.cat([x, y]).max()) < 64
    assert (dm.vocab_size, dm.block_size, dm.num_outputs, dm.task) == (64, 16, 64, "language_modeling")


def test_tokens_are_deterministic_per_seed():
    a, b, c = tokens(split_seed=3), tokens(split_seed=3), tokens(split_seed=4)
    xa, xb, xc = (torch.cat([t for t, _ in dm.val_dataloader()]) for dm in (a, b, c))
    assert torch.equal(xa, xb) and a.entropy_rate == b.entropy_rate
    assert not torch.equal(xa, xc)
    # the shuffling seed changes the batch order, not the data
    s1, s2 = tokens(seed=1).train_dataloader(), tokens(seed=2).train_dataloader()
    first1, first2 = next(iter(s1))[0], next(iter(s2))[0]
    assert not torch.equal(first1, first2)
    assert torch.equal(tokens(seed=1)._splits[0], tokens(seed=2)._splits[0])


def test_tokens_have_structure_a_model_can_learn():
    dm = tokens()
    # context helps a lot: the best possible loss is far below the best loss from token frequencies alone
    assert dm.entropy_rate < dm.unigram_entropy - 1.0 < dm.uniform_entropy == pytest.approx(math.log(64))
    # and the process really is the one entropy_rate describes: a bigram count model gets close to it
    x, y = dm._splits[0].reshape(-1), dm._splits[1].reshape(-1)
    counts = torch.ones(64, 64).index_put_((x, y), torch.ones(len(x)), accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    bigram = -logp[dm._splits[2].reshape(-1), dm._splits[3].reshape(-1)].mean().item()
    assert dm.entropy_rate < bigram < dm.entropy_rate + 0.3


def test_tokens_split_and_batches():
    dm = tokens(num_tokens=17 * 100, val_fraction=0.1)  # 100 windows of block_size + 1 = 17 tokens
    assert dm.num_train == 90 and sum(len(x) for x, _ in dm.val_dataloader()) == 10
    train = dm.train_dataloader()
    assert len(train) == 11 and all(len(x) == 8 for x, _ in train)  # the last incomplete batch is dropped
    assert len(dm.val_dataloader()) == 2  # validation keeps every window


def test_tokens_shard_across_ranks():
    dm = tokens(num_tokens=17 * 100)
    shards = [TensorBatches(*dm._splits[:2], 8, shuffle=True, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    rows = [torch.cat([x for x, _ in s]) for s in shards]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not {tuple(r) for r in rows[0].tolist()} & {tuple(r) for r in rows[1].tolist()}


def test_markov_windows_log_probabilities_match_the_process():
    # noise=1: every token is an independent draw from the Zipf prior, so logp is the prior's log-probability
    toks, logp = markov_windows(50, 9, 10, noise=1.0, zipf=1.0, seed=0)
    prior = 1 / torch.arange(1, 11).double()
    prior /= prior.sum()
    assert torch.allclose(logp.double(), prior[toks[:, 1:]].log(), atol=1e-6)
    # higher-order contexts work too
    toks2, logp2 = markov_windows(20, 12, 8, order=2, seed=1)
    assert toks2.shape == (20, 12) and logp2.shape == (20, 11) and bool((logp2 <= 0).all())


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"vocab_size": 1}, "data.vocab_size=1"),
        ({"block_size": 0}, "data.block_size=0"),
        ({"num_tokens": 10}, "data.num_tokens=10"),
        ({"noise": 1.5}, "data.noise=1.5"),
        ({"order": 0}, "data.order=0"),
    ],
)
def test_tokens_reject_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        TokensDataModule(**kw)
    with pytest.raises(ValueError, match="data.order=5"):
        TokensDataModule(vocab_size=256, order=5)
