"""Layer-wise learning-rate decay: the depth of each parameter, counted from the output.

With ``lr_layer_decay = g`` in (0, 1], a parameter at depth d gets ``lr0 * g^d`` (composing with
``lr_multipliers``): the output layer learns at the full lr, each layer further from it at g times the lr of
the one above (Clark et al. 2020, as used to fine-tune BERT- and ViT-style models). How the param groups are
built lives in :mod:`lightopt.core.optimizers`.

Depths: a model may say them itself with ``lr_layer_depths() -> {parameter name: depth}`` (lightopt's GPT
does: the head and final norm 0, blocks counted from the head, the embeddings deepest). Otherwise a *layer*
is a module holding a weight of two or more dimensions (``nn.Linear``, convolutions, ``nn.Embedding``), in
module order; other parameters (biases, norms) belong to the layer before them, and the last layer is at
depth 0.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lightopt.checks import number
from lightopt.errors import ConfigError

KEY = "lr_layer_decay"


def check_layer_decay(value: Any) -> float | None:
    """``lr_layer_decay`` as a float in (0, 1], or None for no decay."""
    if value is None:
        return None
    return number(KEY, value, "a factor in (0, 1] per layer from the output (1 = no decay), or null", low=0.0,
                  high=1.0, low_open=True)


def layer_depths(module: nn.Module, named: list[tuple[str, nn.Module, nn.Parameter]]) -> dict[int, int]:
    """``{id(param): depth}`` for the trainable parameters ``named`` (``(name, owner, param)`` in module order)."""
    own = getattr(module, "lr_layer_depths", None)
    if callable(own):
        depths = own()
        missing = [name for name, _, _ in named if name not in depths]
        if missing:
            raise ConfigError(KEY, f"{type(module).__name__}.lr_layer_depths()", "a depth for every trainable "
                              "parameter", f"it gives none for {', '.join(missing[:5])}")
        return {id(p): int(depths[name]) for name, _, p in named}
    layer, last_owner, index = -1, None, {}
    for _, owner, p in named:
        if p.ndim >= 2 and owner is not last_owner:
            layer, last_owner = layer + 1, owner
        index[id(p)] = max(layer, 0)
    top = max(index.values(), default=0)
    return {pid: top - i for pid, i in index.items()}
