"""Each trial's job config, composed by Hydra once per *shape* of its overrides and copied for the rest.

Trials whose overrides differ only in the values of searched numbers (``optimizer.lr=0.0123``) compose to the
same config up to those values: a number cannot change Hydra's defaults list (only config group choices can),
so the first trial of a shape is composed by Hydra and every later one is a copy with its numbers set the way
Hydra sets a command-line value (Hydra refuses a number as a config group's choice). :class:`TrialConfigs` is
the config loader the sweep's launcher gets, so that a trial costs one copy instead of a composition, however
the launcher runs it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

MAX_SHAPES = 256  # compositions kept; shapes are few unless a custom search space adds numbers


class TrialConfigs(ConfigLoader):
    """Hydra's config loader with :meth:`load_sweep_config` composing once per shape (see the module)."""

    def __init__(self, loader: ConfigLoader, numeric_keys: Iterable[str] = ()) -> None:
        self.loader = loader
        self.numeric_keys = frozenset(numeric_keys)
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def shape(self, overrides: Sequence[str]) -> tuple[str, ...]:
        """The overrides with the values of the numeric keys left out: what the composition depends on."""
        return tuple(key if (key := _key(line)) in self.numeric_keys else line for line in overrides)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        shape = self.shape(sweep_overrides)
        base = self.composed.get(shape)
        if base is None:
            base = self.loader.load_sweep_config(master_config, list(sweep_overrides))
            if len(self.composed) >= MAX_SHAPES:
                self.composed.clear()
            self.composed[shape] = base
            return copy.deepcopy(base)  # the launcher writes into the config it gets (job id, num)
        cfg = copy.deepcopy(base)
        _set_values(cfg, [line for line in sweep_overrides if _key(line) in self.numeric_keys and line[0] != "~"],
                    sweep_overrides)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)  # as Hydra's: the same resolved ${now:}
        return cfg

    def configs(self) -> list[DictConfig]:
        """One composed config per shape seen so far (what the sweep report reads the trials' settings from)."""
        return list(self.composed.values())

    # The rest of Hydra's ConfigLoader interface, unchanged.
    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


def _key(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def _set_values(cfg: DictConfig, lines: Sequence[str], all_lines: Sequence[str]) -> None:
    """Set each ``key=number`` as Hydra applies a command-line value (typed nodes check it), and the records of
    the job's overrides that Hydra derives from them (``hydra.overrides.task``, ``hydra.job.override_dirname``)."""
    for override in OverridesParser.create().parse_overrides(list(lines)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True,
                         force_add=override.is_add() or override.is_force_add())
    task = [line for line in all_lines if not _key(line).startswith(("hydra.", "hydra/"))]
    dirname = cfg.hydra.job.config.override_dirname
    # Hydra's documented rule: the task overrides but the excluded keys, sorted, kv_sep between key and value
    kept = sorted(line for line in task if _key(line).split("@", 1)[0] not in dirname.exclude_keys)
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = task
        cfg.hydra.job.override_dirname = re.sub("=", dirname.kv_sep, dirname.item_sep.join(kept))
