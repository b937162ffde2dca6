"""In-memory batching and the shipped data modules."""

import torch

from lightopt.data import DigitsDataModule, RegressionDataModule, TensorBatches


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
