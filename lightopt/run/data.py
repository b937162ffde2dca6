"""Data modules that ship with lightopt, and the in-memory batch iterator they share.

- :class:`TensorBatches` batches tensors held in memory by slicing (one permutation per epoch, then
  contiguous slices), which is several times cheaper than per-sample indexing plus collation.
- :class:`DigitsDataModule`: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download).
- :class:`RegressionDataModule`: synthetic ``y = w*x + b + noise``, the classic gradient-descent example.
- :class:`TokensDataModule`: token windows for language modeling from a seeded random sparse Markov chain
  (:func:`markov_windows`): learnable structure, no download.

A user's own ``LightningDataModule`` works too (``data._target_``); it may expose ``num_features``,
``num_outputs`` and ``task`` so models can be sized automatically. Models and losses live elsewhere.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor

from lightopt.checks import integer, number
from lightopt.errors import ConfigError


class TensorBatches:
    """Iterate ``(x, y)`` batches over tensors, shuffled per epoch and sharded across DDP ranks.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Lightning calls ``sampler.set_epoch(e)`` on a loader's sampler
    before each epoch; this object is its own sampler for that purpose.

    Rows are dealt out to the ranks in turn. With ``even`` (training), every rank gets ``len(x) //
    world_size`` of them (``drop_last`` drops its last, smaller batch) and the rest wait for another
    epoch: the ranks take the same number of equal steps, whose gradients DDP averages. Without it
    (evaluation), every row is used exactly once, so metrics reduced over the ranks are those of the whole
    set; the shares then differ by at most one row, and each is cut into the same number of batches (sizes
    differing by at most one, at most ``batch_size`` rows, or 2 when that is 1 and the shares differ) so
    that no rank waits for another.
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
        even: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.even = even or world_size == 1
        if not self.even and len(x) < world_size:
            raise ValueError(f"{len(x)} rows cannot be shared by {world_size} processes: every process needs "
                             "at least one; use fewer processes or more rows")
        self.epoch = 0
        # Lightning looks for set_epoch on a loader's sampler and inspects batch_sampler: we are the former
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self) -> int:
        """Rows of this rank's share (uneven shares: of the largest one, which sets the number of batches)."""
        n, world = len(self.x), self.world_size
        return n // world if self.even else -(-n // world)

    def __len__(self) -> int:
        rows = self._rows()
        if not self.even:  # as many batches on every rank, none of them empty
            return min(-(-rows // self.batch_size), len(self.x) // self.world_size)
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.x, self.y
        if self.shuffle or self.world_size > 1:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(len(x), generator=g) if self.shuffle else torch.arange(len(x))
            order = order[self.rank :: self.world_size]
            if self.even:
                order = order[: self._rows()]
            x, y = x[order], y[order]
        if not self.even:
            yield from zip(x.tensor_split(len(self)), y.tensor_split(len(self)), strict=True)
            return
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield x[sl], y[sl]


class _InMemoryDataModule(L.LightningDataModule):
    """Shared plumbing: tensors made in :meth:`_make`, split once, served by :class:`TensorBatches`."""

    task: str = "classification"
    #: drop the last, smaller training batch of an epoch (every step then has the same shape)
    drop_last_train: bool = False

    def __init__(self, batch_size: int, val_fraction: float, split_seed: int, seed: int | None) -> None:
        super().__init__()
        self.batch_size = integer("data.batch_size", batch_size, "an integer >= 1 (samples per device and step)",
                                  low=1)
        self.val_fraction = number("data.val_fraction", val_fraction, "a fraction in (0, 1)", low=0.0, high=1.0,
                                   low_open=True, high_open=True)
        self.split_seed = integer("data.split_seed", split_seed, "an integer >= 0", low=0)
        # seed: null (no seeding) still needs an order per epoch: a fresh random one
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else integer(
            "data.seed", seed, "an integer >= 0, or null", low=0)
        self._splits: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._samples: tuple[Tensor, Tensor] | None = None
        self._fold: tuple[Tensor, Tensor] | None = None

    def _make(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _all_samples(self) -> tuple[Tensor, Tensor]:
        if self._samples is None:
            self._samples = self._make()
        return self._samples

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        x, y = self._all_samples()
        train, val = self._fold if self._fold is not None else self._split_indices(len(x))
        self._splits = (x[train], y[train], x[val], y[val])
        self._after_split(train, val)

    def _after_split(self, train: Tensor, val: Tensor) -> None:
        """Statistics of the split a subclass keeps (none here)."""

    def cv_targets(self) -> Tensor:
        """The targets of all samples, training and validation split together, for ``cv=kfold`` to cut into folds."""
        return self._all_samples()[1]

    def set_fold(self, train: Sequence[int], val: Sequence[int]) -> None:
        """Serve the samples at ``train`` and ``val`` (positions in :meth:`cv_targets`) instead of the
        ``val_fraction`` split."""
        self._fold = (torch.as_tensor(train, dtype=torch.long), torch.as_tensor(val, dtype=torch.long))
        self._splits = None

    def _split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        """(train, val) row indices: a permutation fixed by ``split_seed``, the first share for validation."""
        g = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(n, generator=g)
        n_val = max(1, round(n * self.val_fraction))
        return order[n_val:], order[:n_val]

    @property
    def num_train(self) -> int:
        self.setup()
        return len(self._splits[0])

    def _loader(self, x: Tensor, y: Tensor, train: bool) -> TensorBatches:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        if train and self.batch_size > len(x) // world:
            per_device = f"{len(x) // world} per device on {world} devices" if world > 1 else str(len(x))
            raise ConfigError("data.batch_size", self.batch_size, f"at most the training samples ({per_device}; "
                              "that many is full-batch gradient descent)", "larger than the training split")
        drop_last = train and self.drop_last_train
        return TensorBatches(x, y, self.batch_size, shuffle=train, drop_last=drop_last, seed=self.seed, rank=rank,
                             world_size=world, even=train)

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
        x, y = _digits()
        return x.clone(), y.clone()


@functools.cache
def _digits() -> tuple[Tensor, Tensor]:
    """The digits as tensors, read once per process: reading scikit-learn's file costs ~20 ms, which each trial
    of a sweep run in one process would pay again."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.as_tensor(digits.data, dtype=torch.float32) / 16.0, torch.as_tensor(digits.target, dtype=torch.long)


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


#: most (context, successor) pairs :func:`markov_windows` holds (about 1.5 GB of tables at the limit)
MAX_TRANSITIONS = 2**26


def markov_windows(
    num_windows: int,
    length: int,
    vocab_size: int,
    *,
    order: int = 1,
    branching: int = 4,
    zipf: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
    burn_in: int = 32,
) -> tuple[Tensor, Tensor]:
    """``num_windows`` independent stretches of ``length`` tokens from one seeded random Markov chain.

    The process: token frequencies follow a Zipf prior ``q(i) ~ 1 / (i + 1)^zipf`` over ``vocab_size`` ids.
    Each context (the last ``order`` tokens) has ``branching`` successors drawn from ``q`` (with
    replacement, so a few contexts have fewer distinct ones) with weights from a flat Dirichlet. The next
    token is one of the context's successors with probability ``1 - noise``, a draw from ``q`` otherwise
    (which keeps every token reachable). A model that knows the context predicts the next token with a loss
    near the chain's entropy rate; one that knows only token frequencies cannot beat the unigram entropy.

    Every window starts after ``burn_in`` steps from a uniformly random context, so windows are (close to)
    stationary and independent of each other. All chains advance together: the loop is over positions,
    not tokens, so generating millions of tokens takes well under a second per million.

    Returns:
        ``(tokens, logp)``: ``tokens`` int64 ``(num_windows, length)``; ``logp`` float32
        ``(num_windows, length - 1)``, the log-probability under the true process of each token given its
        context (``-logp.mean()`` is the loss of the best possible model on these windows, in nats).
    """
    if order < 1 or branching < 1 or vocab_size < 2 or length < 2:
        raise ValueError("markov_windows needs order >= 1, branching >= 1, vocab_size >= 2, length >= 2")
    g = torch.Generator().manual_seed(seed)
    prior, successors, weights = _markov_chain(vocab_size, order, branching, zipf, g)
    cum = weights.cumsum(1)
    cum[:, -1] = 1.0

    steps = burn_in + length
    context = torch.randint(0, vocab_size, (num_windows, order), generator=g)
    place = torch.tensor([vocab_size**i for i in range(order)])  # context id = sum(token_i * V^i)
    tokens = torch.empty(num_windows, length, dtype=torch.long)
    logp = torch.empty(num_windows, length - 1, dtype=torch.float32)
    rows = torch.arange(num_windows)
    log_noise_prior = torch.log(noise * prior) if noise > 0 else None
    for step in range(steps):
        ctx = (context * place).sum(1)
        slot = torch.searchsorted(cum[ctx], torch.rand(num_windows, 1, generator=g, dtype=torch.float64))
        nxt = successors[ctx, slot.squeeze(1).clamp_max(branching - 1)]
        if noise > 0:
            jump = torch.rand(num_windows, generator=g) < noise
            nxt = torch.where(jump, torch.multinomial(prior.float(), num_windows, replacement=True, generator=g), nxt)
        pos = step - burn_in  # position of the current context's last token in the window
        if pos >= 0:
            if pos == 0:
                tokens[:, 0] = context[:, -1]
            if pos + 1 < length:
                p = ((successors[ctx] == nxt[:, None]) * weights[ctx]).sum(1) * (1.0 - noise)
                if log_noise_prior is not None:
                    p = p + noise * prior[nxt]
                logp[rows, pos] = p.log().float()
                tokens[:, pos + 1] = nxt
            else:
                break
        context = torch.cat([context[:, 1:], nxt[:, None]], dim=1)
    return tokens, logp


def _markov_chain(vocab_size: int, order: int, branching: int, zipf: float,
                  g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The chain of :func:`markov_windows`: the Zipf prior ``(V,)``, each context's successors and their weights
    ``(V**order, branching)``."""
    n_contexts = vocab_size**order
    if n_contexts * branching > MAX_TRANSITIONS:
        raise ValueError(
            f"data.order={order}: vocab_size**order * branching = {n_contexts * branching} transitions is too "
            f"many to hold; allowed: at most {MAX_TRANSITIONS}"
        )
    prior = torch.arange(1, vocab_size + 1, dtype=torch.float64).pow(-float(zipf))
    prior /= prior.sum()
    successors = torch.multinomial(prior.float(), n_contexts * branching, replacement=True, generator=g)
    weights = -torch.rand(n_contexts, branching, generator=g, dtype=torch.float64).clamp_min(1e-12).log()
    weights /= weights.sum(1, keepdim=True)  # flat Dirichlet: normalized exponential variates
    return prior, successors.view(n_contexts, branching), weights


class TokensDataModule(_InMemoryDataModule):
    """Language modeling on a synthetic token stream: windows ``x`` of ``block_size`` tokens, ``y = x`` shifted by one.

    The tokens come from a seeded random sparse Markov chain (:func:`markov_windows`), so there is structure
    to learn and nothing to download. ``num_tokens // (block_size + 1)`` independent windows are generated
    (each gives ``x = w[:-1]``, ``y = w[1:]``) and split into train and validation by window, with
    ``split_seed``; batches are served by :class:`TensorBatches` (shuffled per epoch with ``seed``, sharded
    across DDP ranks), the last incomplete training batch dropped so every step has the same shape.

    Two reference losses, in nats per token, are attributes after :meth:`setup`: ``unigram_entropy`` (the
    entropy of the training tokens' frequencies: the loss of the best model that ignores context) and
    ``entropy_rate`` (the mean ``-log p(y | context)`` of the validation targets under the true process: the
    loss of the best possible model). A context-free model starts at ``log(vocab_size)``.
    """

    task = "language_modeling"
    drop_last_train = True

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 64,
        num_tokens: int = 250_000,
        order: int = 1,
        branching: int = 4,
        zipf: float = 1.0,
        noise: float = 0.05,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, val_fraction, split_seed, seed)
        checks = (("vocab_size", vocab_size, 2), ("block_size", block_size, 1), ("order", order, 1),
                  ("branching", branching, 1), ("batch_size", batch_size, 1))
        for key, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"data.{key}={value!r}: allowed: an integer >= {low}")
        if num_tokens < 2 * (block_size + 1):
            raise ValueError(f"data.num_tokens={num_tokens!r}: allowed: at least 2 * (block_size + 1) = "
                             f"{2 * (block_size + 1)} (one training and one validation window)")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"data.noise={noise!r}: allowed: a probability in [0, 1]")
        if zipf < 0:
            raise ValueError(f"data.zipf={zipf!r}: allowed: a number >= 0 (0 = uniform token frequencies)")
        if vocab_size**order * branching > MAX_TRANSITIONS:
            raise ValueError(f"data.order={order}: vocab_size**order * branching = {vocab_size**order * branching} "
                             f"transitions is too many to hold; allowed: at most {MAX_TRANSITIONS}")
        self.vocab_size, self.block_size, self.num_tokens = vocab_size, block_size, num_tokens
        self.order, self.branching, self.zipf, self.noise = order, branching, zipf, noise
        self.num_outputs = vocab_size  # classes of the per-token prediction
        self.unigram_entropy: float | None = None
        self.entropy_rate: float | None = None
        self._logp: Tensor | None = None

    def _make(self) -> tuple[Tensor, Tensor]:
        windows, self._logp = markov_windows(
            self.num_tokens // (self.block_size + 1), self.block_size + 1, self.vocab_size, order=self.order,
            branching=self.branching, zipf=self.zipf, noise=self.noise, seed=self.split_seed,
        )
        return windows[:, :-1], windows[:, 1:]

    def _after_split(self, train: Tensor, val: Tensor) -> None:
        y_train = self._splits[1]
        freq = torch.bincount(y_train.reshape(-1), minlength=self.vocab_size).double()
        freq = freq[freq > 0] / freq.sum()
        self.unigram_entropy = float(-(freq * freq.log()).sum())
        self.entropy_rate = float(-self._logp[val].double().mean())

    @property
    def uniform_entropy(self) -> float:
        """``log(vocab_size)``: the loss of a model that predicts every token equally likely."""
        return math.log(self.vocab_size)
