"""The typed schema of ``hydra.sweeper`` for ``hydra/sweeper=lightopt``.

``conf/hydra/sweeper/lightopt.yaml`` extends it and documents every key; the schema makes Hydra reject a
misspelt key or a value of the wrong type (``hydra.sweeper.n_trials=ten``) when the config is composed.
Registered as ``hydra/sweeper/schema/lightopt`` so that it does not show up as a sweeper choice. The types
are ``typing`` ones (and the module has no ``from __future__ import annotations``): OmegaConf reads them at
runtime and does not understand ``X | None``.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class LightoptSweeperConf:
    _target_: str = "hydra_plugins.lightopt_sweeper.lightopt_sweeper.LightoptSweeper"
    _recursive_: bool = False  # the sweeper instantiates sampler and pruner itself (seeds, grid)
    sampler: Any = None
    pruner: Any = None
    direction: Any = None
    objectives: Optional[List[str]] = None
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: Optional[int] = None
    n_jobs: int = 1
    worker: Optional[int] = None
    seed: Optional[int] = 0
    max_failure_rate: Optional[float] = None
    failure_rate_min_trials: Optional[int] = None
    diverged: str = "fail"
    worst_value: Optional[float] = None
    params: Optional[Dict[str, Any]] = None
    search_space: Optional[Dict[str, Any]] = None
    conditional: Optional[Dict[str, Any]] = None
    custom_search_space: Optional[str] = None
    heartbeat_interval: int = 10
    grace_period: Optional[int] = 60
    gpu_per_trial: bool = False
    report: bool = True
    enqueue: Optional[List[Any]] = None
    warm_start: Any = None  # Any: OmegaConf cannot merge a dict given on the command line into a None Dict
    timeout: Optional[float] = None
    stop: Any = None


ConfigStore.instance().store(group="hydra/sweeper/schema", name="lightopt", node=LightoptSweeperConf,
                             provider="lightopt")
