"""Hydra discovers this module (it lies in the ``hydra_plugins`` namespace package) and registers:

- :class:`LightoptSweeper`, the sweeper ``hydra/sweeper=lightopt`` instantiates; it hands everything to
  :class:`lightopt.search.sweeper.OptunaSweeper`, imported only when a sweep starts, so that Hydra's plugin scan at
  every ``python train.py`` start stays free of Optuna and torch imports;
- :class:`LightoptSearchPathPlugin`, which adds this package's YAML configs (``hydra/sweeper/lightopt``,
  ``hydra/sweeper/sampler/*``, ``hydra/sweeper/pruner/*``) to Hydra's config search path.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.lightopt_sweeper import config as _schema  # noqa: F401 - registers the schema


class LightoptSweeper(Sweeper):
    """Optuna (>= 4) hyperparameter search; see :mod:`lightopt.search.sweeper`."""

    def __init__(self, **kwargs: Any) -> None:
        from lightopt.search.sweeper import OptunaSweeper

        self._impl = OptunaSweeper(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)


class LightoptSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="lightopt-sweeper", path="pkg://hydra_plugins.lightopt_sweeper.conf")
