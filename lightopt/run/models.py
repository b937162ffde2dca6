"""Plain ``torch.nn`` models for the ``model/`` config group.

Every model takes ``in_features`` and ``out_features`` first; when a config leaves them ``null`` the
training entry point fills them from the data module (``num_features``, ``num_outputs``). The language
model :class:`GPT` takes ``vocab_size`` and ``block_size`` instead, filled the same way from the data
module's attributes of those names. Models know nothing about losses, optimizers or Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightopt.checks import integer, number, one_of

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
    return ACTIVATIONS[one_of("model.activation", name, tuple(ACTIVATIONS))]()


def _dropout(value: float) -> float:
    return number("model.dropout", value, "a probability in [0, 1)", low=0.0, high=1.0, high_open=True)


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
        integer("model.layers", layers, "an integer >= 0 (hidden layers)", low=0)
        integer("model.width", width, "an integer >= 1 (units per hidden layer)", low=1)
        dropout = _dropout(dropout)
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
        for out in channels:
            integer("model.channels", out, "a list of integers >= 1 (output channels per conv block)", low=1)
        dropout = _dropout(dropout)
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


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t only.

    One fused ``c_attn`` projection gives queries, keys and values; the heads run through
    :func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal=True`` (flash or
    memory-efficient kernels where available); ``c_proj`` maps the heads back to the residual stream.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(
                f"model.n_embd={n_embd} is not a multiple of model.n_head={n_head}; "
                "allowed: n_embd divisible by n_head (each head gets n_embd / n_head dimensions)"
            )
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim)
        q, k, v = self.c_attn(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class GPTMLP(nn.Module):
    """The transformer block's feed-forward part: Linear(C, 4C) -> GELU -> Linear(4C, C) -> dropout."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = GPTMLP(n_embd, dropout, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer language model (GPT-2 architecture): token ids ``(B, T)`` -> logits ``(B, T, V)``.

    Token and learned position embeddings (``nn.Embedding`` both), ``n_layer`` pre-LayerNorm
    :class:`Block` s, a final LayerNorm and a linear LM head without bias, whose weight is the token
    embedding's when ``tie_weights`` (one ``Parameter`` shared by ``wte`` and ``lm_head``, so it appears
    once in ``parameters()`` and in optimizer param groups). Initialized as GPT-2: weights ~ N(0, 0.02),
    biases 0, and the two residual projections of every block (``attn.c_proj``, ``mlp.c_proj``) ~
    N(0, 0.02 / sqrt(2 * n_layer)) so that the residual stream's variance does not grow with depth.

    The LM head is registered last, so it is the last ``nn.Linear`` of ``modules()``: lightopt's Muon split
    (:func:`lightopt.core.optimizers.muon_eligible`) leaves it, the embeddings and the LayerNorms to AdamW and
    gives Muon the block matrices (``c_attn``, ``c_proj``, ``c_fc``) only.

    Args:
        vocab_size: number of token ids (``V``); ids must lie in ``[0, vocab_size)``.
        block_size: longest sequence (context length ``T``) the position embedding covers.
        n_layer: transformer blocks.
        n_head: attention heads per block; ``n_embd`` must be a multiple of it.
        n_embd: width of the residual stream (embedding dimension ``C``).
        dropout: dropout probability on the embeddings, attention weights and residual branches.
        bias: biases in the Linear layers and LayerNorms of the blocks (GPT-2: true).
        tie_weights: the LM head reuses the token embedding matrix (GPT-2: true).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 2,
        n_head: int = 2,
        n_embd: int = 64,
        dropout: float = 0.0,
        bias: bool = True,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        for key, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                           ("n_head", n_head), ("n_embd", n_embd)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{key}={value!r}: allowed: an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout!r}: allowed: a probability in [0, 1)")
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def tied(self) -> bool:
        """Whether the LM head shares the token embedding's weight."""
        return self.lm_head.weight is self.wte.weight

    def lr_layer_depths(self) -> dict[str, int]:
        """Depth from the output of each parameter, for ``lr_layer_decay``: the LM head and final LayerNorm 0, block
        ``i`` (of ``n_layer``) ``n_layer - i``, the embeddings ``n_layer + 1`` (a tied head is the token embedding,
        so it is named and placed as one)."""
        depths = {}
        for name, _ in self.named_parameters():
            part = name.split(".")
            if part[0] == "blocks":
                depths[name] = self.n_layer - int(part[1])
            else:
                depths[name] = self.n_layer + 1 if part[0] in ("wte", "wpe") else 0
        return depths

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, each shared one counted once; ``non_embedding`` leaves out the position embedding
        (and the token embedding unless it is also the LM head), as GPT-2's paper counts."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
            if not self.tied:
                n -= self.wte.weight.numel()
        return n

    def check_data(self, datamodule: Any) -> None:
        """Refuse a data module whose tokens or sequences do not fit (called by ``build_model``)."""
        from lightopt.errors import ConfigError

        vocab = getattr(datamodule, "vocab_size", None)
        if vocab is not None and vocab > self.vocab_size:
            raise ConfigError("model.vocab_size", self.vocab_size, f"an integer >= data.vocab_size={vocab}",
                              "the data has token ids the embedding does not cover")
        block = getattr(datamodule, "block_size", None)
        if block is not None and block > self.block_size:
            raise ConfigError("model.block_size", self.block_size, f"an integer >= data.block_size={block}",
                              "the data's sequences are longer than the position embedding")

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[-1]
        if t > self.block_size:
            raise ValueError(f"sequence of length {t} is longer than model.block_size={self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))
