"""What the data's task decides when the config leaves it open: the objective, its direction, and the loss.

A data module says its task with a class attribute ``task`` (``classification``, ``regression``,
``language_modeling``); ``objective.metric``, ``objective.direction`` and the ``loss`` section left null (the
shipped ``loss=auto``) are filled from it, and what makes no sense (maximizing a loss) is refused. Explicit
settings always win. The run (:mod:`lightopt.run.training`) and the sweeper (for the study's direction) both
resolve the config here, before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lightopt.errors import ConfigError
from lightopt.objective import check_direction, metric_direction


@dataclass(frozen=True)
class TaskDefaults:
    metric: str
    direction: str
    loss: dict[str, Any]  # a loss config section


TASKS = {
    "classification": TaskDefaults("val/acc", "maximize", {"_target_": "torch.nn.CrossEntropyLoss"}),
    "regression": TaskDefaults("val/loss", "minimize", {"_target_": "torch.nn.MSELoss"}),
    "language_modeling": TaskDefaults("val/loss", "minimize", {"_target_": "torch.nn.CrossEntropyLoss"}),
}


def data_task(cfg: Any) -> str | None:
    """The ``task`` class attribute of ``cfg.data``'s ``_target_``, without building the data module."""
    from hydra.utils import get_object

    target = OmegaConf.select(cfg, "data._target_") if isinstance(cfg, DictConfig) else None
    try:
        task = getattr(get_object(target), "task", None) if target else None
    except Exception:  # noqa: BLE001 - an unimportable target is reported where it is checked
        return None
    return task if task in TASKS else None


def objective_of(cfg: Any) -> tuple[str, str]:
    """``(objective.metric, objective.direction)`` with the task's defaults filled in, checked."""
    task = data_task(cfg)
    metric = OmegaConf.select(cfg, "objective.metric")
    direction = OmegaConf.select(cfg, "objective.direction")
    if metric is None:
        if task is None:
            raise ConfigError("objective.metric", None, "the name of a logged validation metric, e.g. val/loss",
                              "the data module has no `task` attribute (classification, regression or "
                              "language_modeling) to choose one by")
        metric = TASKS[task].metric
        direction = direction or TASKS[task].direction
    direction = check_direction(direction if direction is not None else metric_direction(str(metric)))
    if direction == "maximize" and "loss" in str(metric).lower():
        raise ConfigError("objective.direction", direction, f"minimize for objective.metric={metric}",
                          "a loss is better when lower")
    return str(metric), direction


def loss_left_open(cfg: Any) -> bool:
    """Whether the config leaves the loss to the task (``loss=auto``, or no loss section)."""
    loss = cfg.get("loss")
    return loss is None or loss.get("_target_") is None


def resolve(cfg: DictConfig) -> DictConfig:
    """Fill ``objective`` and a null ``loss`` from the data's task, in place; the config is returned."""
    metric, direction = objective_of(cfg)
    with open_dict(cfg):
        cfg.objective.metric, cfg.objective.direction = metric, direction
        if loss_left_open(cfg):
            task = data_task(cfg)
            if task is None:
                raise ConfigError("loss", None, "a loss config group, e.g. loss=cross_entropy or loss=mse",
                                  "the data module has no `task` attribute to choose one by")
            cfg.loss = OmegaConf.create(TASKS[task].loss)
    return cfg
