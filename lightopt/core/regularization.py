"""Which parameters are regularized, and the explicit L1/L2 penalty added to the loss.

:func:`split_decay` sorts a model's parameters into those that take weight decay and penalties and those
that do not (biases, 1-d gains and every parameter of a normalization layer). :class:`Penalty` is the
explicit ``l1*sum|w| + (l2/2)*sum w^2`` term over the decayed parameters. :func:`validate_regularization`
checks the ``regularization`` config group. Weight decay itself is applied by the optimizer; building
optimizers and param groups lives in :mod:`lightopt.core.optimizers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from lightopt.checks import number
from lightopt.errors import ConfigError

__all__ = [
    "NORM_TYPES",
    "REGULARIZATION_DEFAULTS",
    "Penalty",
    "build_penalty",
    "is_no_decay",
    "split_decay",
    "validate_regularization",
]

#: Module types whose parameters are never decayed: decaying a norm's gain pulls it towards 0, which
#: shrinks the layer's output instead of regularizing what it computes.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    _NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

#: Keys of the ``regularization`` config group and their defaults (those of ``conf/regularization/none.yaml``):
#: the one source of the keys a partial section lacks, here and in :mod:`lightopt.core.defaults`.
REGULARIZATION_DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.0,
    "l1_penalty": 0.0,
    "l2_penalty": 0.0,
    "exclude_bias_and_norm": True,
}

NamedParams = list[tuple[str, nn.Parameter]]

_COEFFICIENT = "a finite number >= 0"


def is_no_decay(owner: nn.Module, param: Tensor) -> bool:
    """Whether ``param``, registered directly on module ``owner``, is excluded from decay and penalties.

    True for every parameter of a normalization module (:data:`NORM_TYPES`) and for every parameter with
    ``ndim <= 1`` (biases, scales, 1-d gains), whatever its name.
    """
    return isinstance(owner, NORM_TYPES) or param.ndim <= 1


def named_trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """``(full name, owning module, parameter)`` for each trainable parameter, once each.

    Same order and names as ``module.named_parameters()``: a parameter shared by several modules (tied
    weights) is listed once, under its first name and with its first owner.
    """
    seen: set[int] = set()
    out: list[tuple[str, nn.Module, nn.Parameter]] = []
    for mod_name, mod in module.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                out.append((f"{mod_name}.{p_name}" if mod_name else p_name, mod, p))
    return out


def split_decay(module: nn.Module, exclude_bias_and_norm: bool = True) -> tuple[NamedParams, NamedParams]:
    """Split the trainable parameters of ``module`` into ``(decay, no_decay)`` lists of ``(name, param)``.

    With ``exclude_bias_and_norm=False`` every parameter is decayed and ``no_decay`` is empty.
    """
    decay: NamedParams = []
    no_decay: NamedParams = []
    for name, owner, p in named_trainable_parameters(module):
        (no_decay if exclude_bias_and_norm and is_no_decay(owner, p) else decay).append((name, p))
    return decay, no_decay


def validate_regularization(cfg: Mapping | None) -> dict[str, Any]:
    """The ``regularization`` config with defaults filled in, checked.

    Raises:
        ConfigError: an unknown key, a coefficient that is not a finite number >= 0, or a
            non-boolean ``exclude_bias_and_norm``.
    """
    out = dict(REGULARIZATION_DEFAULTS)
    if cfg is None:
        return out
    for key in cfg:
        if key not in REGULARIZATION_DEFAULTS:
            raise ConfigError(f"regularization.{key}", cfg.get(key), ", ".join(REGULARIZATION_DEFAULTS), "unknown key")
        value = cfg.get(key)
        if key == "exclude_bias_and_norm":
            if value is None:
                continue
            if not isinstance(value, bool):
                raise ConfigError(f"regularization.{key}", value, "true or false")
            out[key] = value
        else:
            out[key] = 0.0 if value is None else number(f"regularization.{key}", value, _COEFFICIENT, low=0.0)
    return out


def _stack(values: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    # _foreach_norm returns one 0-d tensor per parameter, possibly on several devices / dtypes
    first = values[0]
    if all(v.device == first.device and v.dtype == first.dtype for v in values):
        return torch.stack(list(values))
    return torch.stack([v.to(device=first.device, dtype=torch.float32) for v in values])


class Penalty:
    """Explicit penalty ``l1 * sum|w| + (l2 / 2) * sum w^2`` over the decayed parameters of a module.

    The ``1/2`` makes the gradient of the L2 term ``l2 * w``, the same as coupled weight decay ``l2``.
    The parameter list is collected once, at construction; call the object to get the penalty as a
    0-d tensor that is part of the autograd graph. A penalty whose coefficients are both zero is falsy
    (``bool(penalty)`` / :attr:`active`), so callers can skip it entirely.
    """

    def __init__(
        self,
        module: nn.Module,
        l1_penalty: float = 0.0,
        l2_penalty: float = 0.0,
        exclude_bias_and_norm: bool = True,
    ) -> None:
        self.l1 = number("regularization.l1_penalty", l1_penalty, _COEFFICIENT, low=0.0)
        self.l2 = number("regularization.l2_penalty", l2_penalty, _COEFFICIENT, low=0.0)
        self.exclude_bias_and_norm = exclude_bias_and_norm
        decay, _ = split_decay(module, exclude_bias_and_norm) if self.active else ([], [])
        self.names: list[str] = [n for n, _ in decay]
        self.params: list[nn.Parameter] = [p for _, p in decay]

    @property
    def active(self) -> bool:
        """Whether any coefficient is non-zero."""
        return self.l1 > 0 or self.l2 > 0

    def __bool__(self) -> bool:
        return self.active

    def __call__(self) -> Tensor:
        if not self.active or not self.params:
            return torch.zeros(())
        # one fused per-tensor reduction per norm instead of a Python loop over tensors
        total: Tensor | float = 0.0
        if self.l1 > 0:
            total = total + self.l1 * _stack(torch._foreach_norm(self.params, 1)).sum()
        if self.l2 > 0:
            total = total + (self.l2 / 2) * _stack(torch._foreach_norm(self.params, 2)).square().sum()
        assert isinstance(total, Tensor)
        return total

    def __repr__(self) -> str:
        return (
            f"Penalty(l1={self.l1}, l2={self.l2}, exclude_bias_and_norm={self.exclude_bias_and_norm}, "
            f"params={len(self.params)})"
        )


def build_penalty(module: nn.Module, cfg: Mapping | None) -> Penalty:
    """The :class:`Penalty` of ``module`` under the ``regularization`` config ``cfg`` (validated)."""
    reg = validate_regularization(cfg)
    return Penalty(module, reg["l1_penalty"], reg["l2_penalty"], reg["exclude_bias_and_norm"])
