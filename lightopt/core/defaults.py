"""The shipped config files as defaults: a partial config section completed from ``lightopt.conf``.

The top-level ``conf/`` directory is installed as the package ``lightopt.conf``; its ``schedule/`` and
``optimizer/`` files are the defaults of a partial ``schedule`` or ``optimizer`` section (see
:func:`complete_section` for which file a section is completed from). A ``regularization`` section is
completed from :data:`lightopt.core.regularization.REGULARIZATION_DEFAULTS` (the values of
``conf/regularization/none.yaml``), the one source :func:`~lightopt.core.regularization.validate_regularization`
also fills from.

What lives here: finding the shipped file of a section and merging the section onto it. What does not:
checking the completed section (:mod:`lightopt.core.optimizers`, :mod:`lightopt.core.schedules`,
:mod:`lightopt.core.regularization`) and composing a whole config (Hydra, for ``lightopt-train``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightopt.core.optimizers import optimizer_class
from lightopt.core.regularization import REGULARIZATION_DEFAULTS
from lightopt.core.schedules.params import EXCLUSIVE_PARAMS, plain
from lightopt.errors import ConfigError

__all__ = ["GROUPS", "complete_section"]

#: The config groups :func:`complete_section` completes.
GROUPS = ("optimizer", "schedule", "regularization")

_PACKAGE = "lightopt.conf"
_NOT_A_MAPPING = {
    "optimizer": "a mapping with _target_ and the optimizer's arguments",
    "schedule": "a mapping with name and the schedule's parameters",
    "regularization": f"a mapping with some of {', '.join(REGULARIZATION_DEFAULTS)}",
}


@functools.cache
def _shipped_names(group: str) -> tuple[str, ...]:
    """Names of the shipped files of ``group`` (``conf/<group>/<name>.yaml``), sorted."""
    folder = files(_PACKAGE).joinpath(group)
    if not folder.is_dir():
        return ()
    return tuple(sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml")))


def _load(group: str, name: str) -> DictConfig:
    """A fresh copy of ``conf/<group>/<name>.yaml``, interpolations unresolved."""
    return OmegaConf.create(copy.deepcopy(_parsed(group, name)))


@functools.cache
def _parsed(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` parsed once per process (every run of a sweep's trials needs it again)."""
    with files(_PACKAGE).joinpath(group, f"{name}.yaml").open("r", encoding="utf-8") as f:
        cfg = OmegaConf.load(f)
    assert isinstance(cfg, DictConfig), f"conf/{group}/{name}.yaml is not a mapping"
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _class_of(target: Any) -> type | None:
    try:
        return optimizer_class(target)
    except ConfigError:
        return None


@functools.cache
def _optimizer_files() -> tuple[tuple[str, type | None], ...]:
    """``(name, class of its _target_)`` of each shipped optimizer file; ``None`` where it does not import."""
    return tuple((name, _class_of(_load("optimizer", name).get("_target_"))) for name in _shipped_names("optimizer"))


def _optimizer_file(target: Any) -> str | None:
    cls = _class_of(target)
    if cls is None:
        return None
    names = [name for name, file_cls in _optimizer_files() if file_cls is cls]
    preferred = cls.__name__.lower()
    return preferred if preferred in names else (names[0] if names else None)


def _shipped_file(group: str, section: Mapping[str, Any]) -> str | None:
    """The name of the shipped file ``section`` is completed from, if any."""
    if group == "optimizer":
        return _optimizer_file(section.get("_target_"))
    name = section.get("name")
    return name if isinstance(name, str) and name in _shipped_names("schedule") else None


def _root(root_cfg: Any) -> DictConfig:
    """A detached, writable copy of the user's whole config (or an empty one) to resolve interpolations in."""
    if root_cfg is None:
        return OmegaConf.create({})
    try:
        if isinstance(root_cfg, DictConfig):
            root_cfg = OmegaConf.to_container(root_cfg, resolve=False)
        root = OmegaConf.create(root_cfg)
    except (OmegaConfBaseException, ValueError, TypeError):
        return OmegaConf.create({})
    return root if isinstance(root, DictConfig) else OmegaConf.create({})


def _merge(group: str, name: str, given: dict[str, Any], root_cfg: Any, skip: set[str]) -> dict[str, Any]:
    """``given`` merged onto ``conf/<group>/<name>.yaml`` without its keys ``skip``, in the file's key order.

    Interpolations in the file resolve against ``root_cfg``; a value whose interpolation does not resolve
    there (a key the config lacks) is left out.
    """
    root = _root(root_cfg)
    root[group] = _load(group, name)
    node = root[group]
    out: dict[str, Any] = {}
    for key in map(str, node):
        if key in given:
            out[key] = given[key]
        elif key not in skip:
            try:
                out[key] = plain(node[key])
            except OmegaConfBaseException:
                continue
    return {**out, **given}


def _alternatives(name: str, given: Mapping[str, Any]) -> set[str]:
    """Keys of schedule ``name`` whose shipped value is dropped because the section sets an alternative."""
    out: set[str] = set()
    for keys in EXCLUSIVE_PARAMS.get(name, ()):
        if any(given.get(k) is not None for k in keys):
            out |= set(keys)
    return out


def complete_section(group: str, section: Mapping[str, Any] | None, root_cfg: Any = None) -> dict[str, Any] | None:
    """``section`` of config group ``group`` with the keys it lacks taken from the shipped defaults.

    The keys ``section`` gives always win; the result is a plain dict (a ``DictConfig`` is resolved), or
    ``None`` for a missing section.

    * ``schedule``: merged onto ``conf/schedule/<name>.yaml`` when ``name`` is such a file; a dotted-path
      (user) function or an unknown name has no defaults. A key the section sets (not null) drops the
      shipped value of its alternatives (``exponential``: ``decay_rate`` or ``lr_final``).
    * ``optimizer``: merged onto the shipped ``conf/optimizer/*.yaml`` whose ``_target_`` imports as the
      same class. When several files share it (``SGD``: ``momentum``, ``nesterov``, ``sgd``), the file named
      like the class in lower case (``sgd.yaml``) is taken, else the first by name (``MuonAdamW``:
      ``muon.yaml``). No match, or a target that does not import: unchanged (the class's own defaults).
    * ``regularization``: merged onto :data:`~lightopt.core.regularization.REGULARIZATION_DEFAULTS`.

    Interpolations in a shipped file resolve against ``root_cfg``, the user's whole config (plateau's
    ``monitor: ${objective.metric}``); a key whose interpolation does not resolve there is left out, for the
    section's own checks to name it (plateau then needs ``schedule.monitor``; its ``mode`` defaults to
    ``min``).

    Raises:
        ConfigError: ``section`` is not a mapping.
        ValueError: ``group`` is not one of :data:`GROUPS`.
    """
    if group not in GROUPS:
        raise ValueError(f"no shipped defaults for config group {group!r}; groups: {', '.join(GROUPS)}")
    if section is None:
        return None
    if not isinstance(section, Mapping):  # DictConfig included
        raise ConfigError(group, section, _NOT_A_MAPPING[group])
    items = plain(section) if isinstance(section, DictConfig) else {k: plain(v) for k, v in section.items()}
    given = {str(k): v for k, v in items.items()}
    if group == "regularization":
        return {**REGULARIZATION_DEFAULTS, **given}
    name = _shipped_file(group, given)
    if name is None:
        return given
    return _merge(group, name, given, root_cfg, _alternatives(name, given) if group == "schedule" else set())
