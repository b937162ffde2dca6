"""Data modules that ship with lightopt, and the in-memory batch iterator they share.

- :class:`TensorBatches` batches tensors held in memory by slicing (one permutation per epoch, then
  contiguous slices), which is several times cheaper than per-sample indexing plus collation.
- :class:`DigitsDataModule`: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download).
- :class:`RegressionDataModule`: synthetic ``y = w*x + b + noise``, the classic gradient-descent example.

A user's own ``LightningDataModule`` works too (``data._target_``); it may expose ``num_features``,
``num_outputs`` and ``task`` so models can be sized automatically. Models and losses live elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor


class TensorBatches:
    """Iterate ``(x, y)`` batches over tensors, shuffled per epoch and sharded across DDP ranks.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Lightning calls ``sampler.set_epoch(e)`` on a loader's sampler
    before each epoch; this object is its own sampler for that purpose.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Lightning looks for set_epoch on a loader's sampler and inspects batch_sampler: we are the former
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self) -> int:
        # every rank gets the same number of rows, so collective ops stay in lockstep
        return len(self.x) // self.world_size

    def __len__(self) -> int:
        rows = self._rows()
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.x, self.y
        if self.shuffle or self.world_size > 1:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(len(x), generator=g) if self.shuffle else torch.arange(len(x))
            order = order[self.rank :: self.world_size][: self._rows()]
            x, y = x[order], y[order]
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield x[sl], y[sl]


class _InMemoryDataModule(L.LightningDataModule):
    """Shared plumbing: tensors made in :meth:`_make`, split once, served by :class:`TensorBatches`."""

    task: str = "classification"

    def __init__(self, batch_size: int, val_fraction: float, split_seed: int, seed: int) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.seed = seed
        self._splits: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def _make(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        x, y = self._make()
        g = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(x), generator=g)
        n_val = max(1, round(len(x) * self.val_fraction))
        val, train = order[:n_val], order[n_val:]
        self._splits = (x[train], y[train], x[val], y[val])

    @property
    def num_train(self) -> int:
        self.setup()
        return len(self._splits[0])

    def _loader(self, x: Tensor, y: Tensor, train: bool) -> TensorBatches:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        return TensorBatches(
            x, y, self.batch_size, shuffle=train, seed=self.seed, rank=rank, world_size=world
        )

    def train_dataloader(self) -> TensorBatches:
        self.setup()
        return self._loader(self._splits[0], self._splits[1], train=True)

    def val_dataloader(self) -> TensorBatches:
        self.setup()
        return self._loader(self._splits[2], self._splits[3], train=False)


class DigitsDataModule(_InMemoryDataModule):
    """scikit-learn's digits: 1797 images of 8x8 pixels (64 features in [0, 1]), 10 classes."""

    task = "classification"
    num_features = 64
    num_outputs = 10

    def __init__(
        self, batch_size: int = 64, val_fraction: float = 0.2, split_seed: int = 0, seed: int = 0
    ) -> None:
        super().__init__(batch_size, val_fraction, split_seed, seed)

    def _make(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.as_tensor(digits.target, dtype=torch.long)
        return x, y


class RegressionDataModule(_InMemoryDataModule):
    """Synthetic linear data ``y = weight*x + bias + noise``, ``x ~ U(-1, 1)``, ``noise ~ N(0, noise^2)``."""

    task = "regression"
    num_features = 1
    num_outputs = 1

    def __init__(
        self,
        n_samples: int = 1000,
        weight: float = 2.0,
        bias: float = 1.0,
        noise: float = 0.1,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, val_fraction, split_seed, seed)
        self.n_samples, self.weight, self.bias, self.noise = n_samples, weight, bias, noise

    def _make(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.split_seed)
        x = torch.rand(self.n_samples, 1, generator=g) * 2 - 1
        y = self.weight * x + self.bias + self.noise * torch.randn(self.n_samples, 1, generator=g)
        return x, y
