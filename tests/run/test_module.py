"""The validation metrics of ``LitModel``: weighted means whose sums are what DDP ranks reduce."""

import math

import pytest
import torch

from lightopt.run.module import MeanPerplexity, WeightedMean


def test_weighted_mean_weights_each_batch_by_its_size():
    mean = WeightedMean()
    mean.update(torch.tensor(1.0), weight=30)
    mean.update(torch.tensor(4.0), weight=10)
    assert mean.compute().item() == pytest.approx((30 * 1.0 + 10 * 4.0) / 40)


def test_weighted_mean_of_two_shards_merged_is_the_mean_of_the_whole_set():
    # what the DDP reduction does: sum each state over the ranks
    losses = torch.rand(11)
    shards = [WeightedMean(), WeightedMean()]
    for i, value in enumerate(losses):
        shards[i % 2].update(value, weight=1 + i)
    shards[0].merge_state(shards[1])
    weights = torch.arange(1, 12).float()
    assert shards[0].compute().item() == pytest.approx(((losses * weights).sum() / weights.sum()).item())


def test_a_nan_loss_makes_the_mean_nan():
    mean = WeightedMean()
    mean.update(torch.tensor(0.5), weight=8)
    mean.update(torch.tensor(float("nan")), weight=8)
    assert math.isnan(mean.compute().item())


def test_perplexity_is_exp_of_the_weighted_mean_loss():
    ppl = MeanPerplexity()
    ppl.update(torch.tensor(1.0), weight=3)
    ppl.update(torch.tensor(2.0), weight=1)
    assert ppl.compute().item() == pytest.approx(math.exp(1.25))
