"""Build any ``torch.optim.Optimizer`` from an ``optimizer`` config section.

:func:`check_optimizer` checks the section without a model (the class, its arguments, the lr) and gives an
:class:`OptimizerSpec`; :func:`param_groups` turns a model into param groups (weight decay only where it
belongs, per-pattern learning-rate multipliers, the Muon/AdamW split); :func:`create_optimizer` checks the
section, builds the groups and instantiates the class named by ``_target_``. Filling a partial section from
the shipped config files lives in :mod:`lightopt.core.defaults`. Which parameters are decayed is decided in
:mod:`lightopt.core.regularization`; the combined Muon optimizer lives in :mod:`lightopt.core.muon`; learning-rate
schedules live elsewhere.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lightopt.checks import number
from lightopt.core.layer_decay import check_layer_decay, layer_depths
from lightopt.core.regularization import NORM_TYPES, is_no_decay, named_trainable_parameters, validate_regularization
from lightopt.errors import ConfigError

__all__ = [
    "OptimizerSpec",
    "auto_fused",
    "check_optimizer",
    "create_optimizer",
    "muon_eligible",
    "optimizer_class",
    "param_groups",
]

# Keys Hydra's instantiate interprets itself; they are not constructor arguments.
_HYDRA_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_"})
_TARGET_ALLOWED = "an importable torch.optim.Optimizer subclass, e.g. torch.optim.AdamW"


def muon_eligible(module: nn.Module) -> dict[int, bool]:
    """``{id(param): use_muon}`` for every trainable parameter of ``module``.

    Muon orthogonalizes 2-D updates, which suits the weight matrices of hidden layers only. The output
    head (the last ``nn.Linear`` in ``module.modules()`` order), embeddings, norm parameters, biases and
    conv kernels (``ndim != 2``) are left to AdamW.
    """
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    head_params = {id(p) for p in linears[-1].parameters()} if linears else set()
    return {
        id(p): p.ndim == 2 and id(p) not in head_params and not isinstance(owner, (nn.Embedding, *NORM_TYPES))
        for _, owner, p in named_trainable_parameters(module)
    }


def _check_multipliers(lr_multipliers: Mapping[str, float] | None) -> list[tuple[str, float]]:
    patterns = list((lr_multipliers or {}).items())
    for pattern, mult in patterns:
        number(f"lr_multipliers.{pattern}", mult, "a number >= 0", low=0.0)
    return patterns


def _unmatched_pattern(pattern: str, named: list[tuple[str, nn.Module, nn.Parameter]]) -> ConfigError:
    names = [n for n, _, _ in named]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return ConfigError("lr_multipliers", pattern, f"a glob matching parameter names such as: {shown}",
                       "matches no parameter")


# a parameter's bucket: (index of its lr_multipliers pattern or -1, decayed, use_muon or None without the split,
# depth from the output with lr_layer_decay, else 0)
_Bucket = tuple[int, bool, bool | None, int]


def _buckets(
    module: nn.Module, patterns: list[tuple[str, float]], decay: bool, split_muon: bool, by_depth: bool
) -> dict[_Bucket, list[nn.Parameter]]:
    """Every trainable parameter in its bucket, in parameter order; a pattern matching none raises."""
    named = named_trainable_parameters(module)
    muon = muon_eligible(module) if split_muon else {}
    depths = layer_depths(module, named) if by_depth else {}
    buckets: dict[_Bucket, list[nn.Parameter]] = {}
    matched: set[int] = set()
    for name, owner, p in named:
        which = next((i for i, (pat, _) in enumerate(patterns) if fnmatch.fnmatchcase(name, pat)), -1)
        if which >= 0:
            matched.add(which)
        decays = not (decay and is_no_decay(owner, p))
        key = (which, decays, muon.get(id(p)) if split_muon else None, depths.get(id(p), 0))
        buckets.setdefault(key, []).append(p)
    for i, (pattern, _) in enumerate(patterns):
        if i not in matched:
            raise _unmatched_pattern(pattern, named)
    return buckets


def param_groups(
    module: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    exclude_bias_and_norm: bool = True,
    lr_multipliers: Mapping[str, float] | None = None,
    split_muon: bool = False,
    lr_layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Param groups for ``module``'s trainable parameters, each parameter in exactly one group.

    Every group has ``params``, ``name``, ``lr`` and ``weight_decay`` (``0.0`` in no-decay groups, set
    explicitly so an optimizer's own non-zero default never applies). Groups, in this order and without
    empty ones: ``default``, ``no_decay`` (only when ``weight_decay`` is non-zero), then per
    ``lr_multipliers`` pattern ``<pattern>`` and ``<pattern>/no_decay``. ``lr_multipliers`` maps ``fnmatch``
    globs on full parameter names (e.g. ``"head.*"``) to factors on ``lr``; the first matching pattern wins.
    With ``split_muon`` every group also gets ``use_muon`` (see :func:`muon_eligible`) and is split in two,
    names suffixed ``/muon`` and ``/adamw``. With ``lr_layer_decay`` g every group is split by depth d from
    the output (:func:`lightopt.core.layer_decay.layer_depths`), its lr times g^d, names suffixed ``/depth<d>``.

    Raises:
        ConfigError: a multiplier that is not a number >= 0, or a pattern matching no parameter.
    """
    patterns = _check_multipliers(lr_multipliers)
    layer_decay = check_layer_decay(lr_layer_decay)
    # without weight decay a no-decay group would differ from the default one in name only
    buckets = _buckets(module, patterns, bool(weight_decay and exclude_bias_and_norm), split_muon,
                       layer_decay is not None)
    groups: list[dict[str, Any]] = []
    for which in range(-1, len(patterns)):
        base = "default" if which < 0 else patterns[which][0]
        group_lr = lr if which < 0 else lr * float(patterns[which][1])
        for decays in (True, False):
            for use_muon in ((True, False) if split_muon else (None,)):
                for depth in sorted({k[3] for k in buckets if k[:3] == (which, decays, use_muon)}):
                    name = base if decays else ("no_decay" if which < 0 else f"{base}/no_decay")
                    group: dict[str, Any] = {
                        "params": buckets[(which, decays, use_muon, depth)],
                        "name": name,
                        "lr": group_lr * (layer_decay**depth if layer_decay is not None else 1.0),
                        "weight_decay": float(weight_decay) if decays else 0.0,
                    }
                    if use_muon is not None:
                        group["name"] = f"{name}/{'muon' if use_muon else 'adamw'}"
                        group["use_muon"] = use_muon
                    if layer_decay is not None:
                        group["name"] += f"/depth{depth}"
                    groups.append(group)
    return groups


def optimizer_class(target: Any) -> type[torch.optim.Optimizer]:
    """The optimizer class named by the dotted path ``target``.

    Raises:
        ConfigError: ``target`` does not import, or is not a ``torch.optim.Optimizer`` subclass.
    """
    if not isinstance(target, str) or not target:
        raise ConfigError("optimizer._target_", target, _TARGET_ALLOWED, "missing" if target is None else None)
    try:
        cls = get_class(target)
    except Exception as e:  # ImportError, AttributeError, ValueError from hydra's locator
        raise ConfigError("optimizer._target_", target, _TARGET_ALLOWED, f"cannot import it ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("optimizer._target_", target, _TARGET_ALLOWED, "not an Optimizer subclass")
    return cls


def auto_fused(params: Iterable[Tensor]) -> bool | None:
    """``True`` when every parameter is a floating-point tensor on one device type with fused optimizer
    kernels (CUDA, CPU, ...), else ``None`` (the class's default).

    Fused kernels are the fastest optimizer path: one kernel for all parameters instead of several per
    tensor. On the CPU, Adam's step on the default MLP takes about a quarter of the time of torch's default
    per-tensor loop. Parameters spread over several device types keep the class's default.
    """
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    params = list(params)
    if not params or not all(p.is_floating_point() for p in params):
        return None
    devices = {p.device.type for p in params}
    return True if len(devices) == 1 and devices <= set(_get_fused_kernels_supported_devices()) else None


def _constructor_kwargs(cls: type) -> tuple[list[str], bool]:
    """Keyword names ``cls(params, ...)`` accepts, and whether it takes ``**kwargs``."""
    sig = inspect.signature(cls.__init__)
    names: list[str] = []
    var_kw = False
    for i, (name, p) in enumerate(sig.parameters.items()):
        if i == 0 or name == "params":  # self, then the params every optimizer takes
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(name)
    return names, var_kw


def _default_lr(cls: type) -> Any:
    p = inspect.signature(cls.__init__).parameters.get("lr")
    return None if p is None or p.default is inspect.Parameter.empty else p.default


@dataclass(frozen=True)
class OptimizerSpec:
    """A checked ``optimizer`` config section: everything about the optimizer that needs no model.

    Read-only by convention (the mappings are plain dicts, so a spec pickles): :func:`create_optimizer`
    never changes them.

    Attributes:
        cls: the optimizer class named by ``_target_``.
        kwargs: its constructor keyword arguments from the config, ``lr`` resolved (the class's default
            when the config has none); never ``params`` or ``weight_decay``, and none of Hydra's own keys.
        lr: the learning rate every param group is scaled from (``lr0`` of a schedule).
        target: ``_target_`` as written in the config.
        hydra_keys: Hydra's keys other than ``_target_`` (``_convert_``, ``_recursive_``, ...), if any.
    """

    cls: type[torch.optim.Optimizer]
    kwargs: Mapping[str, Any]
    lr: float
    target: str
    hydra_keys: Mapping[str, Any] = field(default_factory=dict)


def _check_keys(cfg: Mapping[str, Any], cls: type, accepted: list[str], var_kw: bool) -> None:
    for key in cfg:
        if key in _HYDRA_KEYS:
            continue
        if key == "params":
            raise ConfigError("optimizer.params", "...", "no value: parameters come from the model", "not configurable")
        if key == "weight_decay":
            raise ConfigError(
                "optimizer.weight_decay",
                cfg[key],
                "regularization.weight_decay (e.g. regularization=l2) instead",
                "weight decay is set per param group from the regularization group",
            )
        if key not in accepted and not var_kw:
            raise ConfigError(
                f"optimizer.{key}", cfg[key], f"arguments of {cls.__name__}: {', '.join(accepted)}", "unknown argument"
            )


def _check_decay_rates(cfg: Mapping[str, Any]) -> None:
    """Momentum and moment decay rates must lie in [0, 1): torch refuses some values late, a momentum >= 1 never
    (the velocity would then grow without bound)."""
    if cfg.get("momentum") is not None:
        number("optimizer.momentum", cfg["momentum"], "a number in [0, 1)", low=0.0, high=1.0, high_open=True)
    if cfg.get("dampening") is not None:
        number("optimizer.dampening", cfg["dampening"], "a number in [0, 1]", low=0.0, high=1.0)
    betas = cfg.get("betas")
    if betas is not None:
        if not isinstance(betas, (list, tuple)) or not betas:
            raise ConfigError("optimizer.betas", betas, "a list of decay rates, e.g. [0.9, 0.999], each in [0, 1)")
        for i, beta in enumerate(betas):
            number(f"optimizer.betas[{i}]", beta, "a number in [0, 1)", low=0.0, high=1.0, high_open=True)


def check_optimizer(cfg: Mapping | OptimizerSpec) -> OptimizerSpec:
    """Check the ``optimizer`` config section ``cfg`` without building anything; an :class:`OptimizerSpec`.

    ``cfg`` holds ``_target_`` (a dotted path to any ``torch.optim.Optimizer`` subclass) and that class's
    constructor keyword arguments; a ``DictConfig`` is resolved. Values the class itself may reject (e.g.
    ``betas`` out of range) are only found by :func:`create_optimizer`. A spec is returned as it is.

    Raises:
        ConfigError: for a section that is not a mapping, an unimportable or non-optimizer ``_target_``,
            an ``lr`` that is not a number > 0 (or missing where the class has no default), an argument
            the class does not accept, ``params``, or ``weight_decay`` set here instead of in the
            regularization group.
    """
    if isinstance(cfg, OptimizerSpec):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if not isinstance(cfg, Mapping):
        raise ConfigError("optimizer", cfg, "a mapping with _target_ and the optimizer's arguments")
    cls = optimizer_class(cfg.get("_target_"))
    accepted, var_kw = _constructor_kwargs(cls)
    _check_keys(cfg, cls, accepted, var_kw)

    lr = cfg.get("lr", _default_lr(cls))
    if "lr" not in cfg and lr is None:
        raise ConfigError("optimizer.lr", None, "a number > 0", "missing")
    lr = number("optimizer.lr", lr, "a number > 0", low=0.0, low_open=True)
    _check_decay_rates(cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in _HYDRA_KEYS}
    if "lr" in accepted or var_kw:
        kwargs["lr"] = lr
    hydra_keys = {k: v for k, v in cfg.items() if k in _HYDRA_KEYS and k != "_target_"}
    return OptimizerSpec(cls, kwargs, lr, cfg["_target_"], hydra_keys)


def _fused_choice(spec: OptimizerSpec, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"fused": ...}`` when the class takes it, the config leaves it open and :func:`auto_fused` decides."""
    kwargs = spec.kwargs
    if "fused" not in _constructor_kwargs(spec.cls)[0] or kwargs.get("fused") is not None:
        return {}
    # fused cannot be combined with foreach=True or differentiable=True: leave those to the class
    if kwargs.get("foreach") or kwargs.get("differentiable"):
        return {}
    fused = auto_fused(p for g in groups for p in g["params"])
    return {} if fused is None else {"fused": fused}


def _instantiate(spec: OptimizerSpec, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    cfg = {"_target_": spec.target, **spec.hydra_keys, **spec.kwargs, **_fused_choice(spec, groups)}
    try:
        return instantiate(cfg, params=groups, _convert_="all")
    except InstantiationException as e:
        # the class rejected a value (e.g. betas out of range): report it as config, with torch's reason
        cause = e.__cause__ if e.__cause__ is not None else e
        if isinstance(cause, ConfigError):
            raise cause from e
        if not isinstance(cause, (ValueError, TypeError, RuntimeError, IndexError)):
            raise
        raise ConfigError("optimizer", spec.target, f"values {spec.cls.__name__} accepts", str(cause)) from e


def create_optimizer(
    module: nn.Module,
    cfg: Mapping | OptimizerSpec,
    *,
    regularization: Mapping | None = None,
    lr_multipliers: Mapping[str, float] | None = None,
    lr_layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Build the optimizer described by the ``optimizer`` config ``cfg`` for ``module``'s parameters.

    ``cfg`` is checked by :func:`check_optimizer` (or is its result). Weight decay comes from
    ``regularization.weight_decay`` (applied per group, ``0.0`` for biases and norm parameters unless
    ``regularization.exclude_bias_and_norm`` is false); ``lr_multipliers`` scales the learning rate of
    matching parameters and ``lr_layer_decay`` that of deeper layers (see :func:`param_groups`). Classes with
    ``splits_hidden_matrices = True`` (e.g. :class:`lightopt.core.muon.MuonAdamW`) get groups marked ``use_muon``.
    When the class takes ``fused`` and ``cfg.fused`` is null or absent, fused kernels are chosen when all
    parameters are on one device type that has them, CPU and CUDA included (:func:`auto_fused`); an explicit
    value wins.

    Raises:
        ConfigError: everything :func:`check_optimizer` rejects, bad ``regularization`` or
            ``lr_multipliers``, a model without trainable parameters, or values the class itself rejects.
    """
    spec = check_optimizer(cfg)
    reg = validate_regularization(regularization)
    groups = param_groups(
        module,
        lr=spec.lr,
        weight_decay=reg["weight_decay"],
        exclude_bias_and_norm=reg["exclude_bias_and_norm"],
        lr_multipliers=lr_multipliers,
        split_muon=bool(getattr(spec.cls, "splits_hidden_matrices", False)),
        lr_layer_decay=lr_layer_decay,
    )
    if not groups:
        raise ConfigError("optimizer", spec.target, "a model with trainable parameters", "nothing to optimize")
    return _instantiate(spec, groups)
