"""Shapes and structure of the model zoo."""

import pytest
import torch
from torch import nn

from lightopt.models import CNN, MLP, LinearModel


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
