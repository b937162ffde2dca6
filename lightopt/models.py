"""Plain ``torch.nn`` models for the ``model/`` config group.

Every model takes ``in_features`` and ``out_features`` first; when a config leaves them ``null`` the
training entry point fills them from the data module (``num_features``, ``num_outputs``). Models know
nothing about losses, optimizers or Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"model.activation={name!r}: unknown activation; allowed: {', '.join(ACTIVATIONS)}"
        ) from None


class MLP(nn.Sequential):
    """``layers`` hidden blocks of Linear -> activation -> dropout, ``width`` units each, then a linear head."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        layers: int = 2,
        width: int = 128,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: bool = False,
    ) -> None:
        blocks: list[nn.Module] = []
        d = in_features
        for _ in range(layers):
            blocks.append(nn.Linear(d, width))
            if norm:
                blocks.append(nn.LayerNorm(width))
            blocks.append(make_activation(activation))
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            d = width
        blocks.append(nn.Linear(d, out_features))
        super().__init__(*blocks)


class LinearModel(nn.Linear):
    """Linear regression ``y = x W^T + b``; with one input, ``weight`` and ``bias`` are the fitted line."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)


class CNN(nn.Module):
    """Small conv net for small images given as flat vectors (8x8 digits by default).

    Each entry of ``channels`` is a 3x3 conv -> BatchNorm -> activation block; the second and later
    blocks halve the resolution with stride 2. Global average pooling feeds a linear head.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        image_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if c * h * w != in_features:
            raise ValueError(
                f"model.image_shape={list(image_shape)} has {c * h * w} values but the data has "
                f"{in_features} features; allowed: a [channels, height, width] whose product is {in_features}"
            )
        self.image_shape = (c, h, w)
        blocks: list[nn.Module] = []
        for i, out in enumerate(channels):
            blocks += [
                nn.Conv2d(c, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                make_activation(activation),
            ]
            c = out
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(x.shape[0], *self.image_shape)
        x = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(x))
