"""Finding a sweep's study: which Optuna study and storage a sweep directory belongs to
(:func:`sweep_info`), opening it (:func:`load_study`) and keeping Optuna quiet while the report reads it.
Nothing here draws or writes; what the report makes of the study lives in the other modules."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPECTED = ("a sweep directory written by `python train.py -m` (multirun/<date>/<time>/), holding "
            "optimization_results.yaml or multirun.yaml, and the study's optuna.db unless the sweep used "
            "hydra.sweeper.storage")


class NotASweepDir(ValueError):
    """The directory given to the report is not a sweep directory (the message says what is expected)."""


@dataclass
class SweepInfo:
    """Where a sweep's study lives and what it optimized."""

    sweep_dir: Path
    study_name: str | None
    storage: str  # the URL to open
    storage_shown: str  # the same, password hidden
    objectives: list[str]
    config: Any = None  # multirun.yaml (the sweep's master config), or None

    def objective_names(self, n_objectives: int, fallback: str = "objective {}") -> list[str]:
        """The configured objective names, or ``fallback`` numbered from 1 when they do not match the study."""
        if len(self.objectives) == n_objectives:
            return list(self.objectives)
        return [fallback.format(i + 1) for i in range(n_objectives)]


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path) if path.is_file() else None
    except Exception as err:  # noqa: BLE001 - a damaged file: the report says what it can without it
        log.warning("cannot read %s: %s", path, err)
        return None


def select(cfg: Any, key: str) -> Any:
    """``key`` of an OmegaConf config as plain data (resolved where it can be), None when absent."""
    from omegaconf import OmegaConf

    if cfg is None:
        return None
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - e.g. an interpolation that only resolves inside Hydra
        return None
    if not OmegaConf.is_config(value):
        return value
    try:
        return OmegaConf.to_container(value, resolve=True)
    except Exception:  # noqa: BLE001 - the keys the report reads are plain; keep the rest unresolved
        return OmegaConf.to_container(value, resolve=False)


def sweep_info(sweep_dir: str | Path) -> SweepInfo:
    """Find the study of ``sweep_dir``; :class:`NotASweepDir` when it does not look like a sweep directory."""
    from lightopt.storage import hide_password, with_driver

    path = Path(sweep_dir)
    if not path.is_dir():
        raise NotASweepDir(f"{path}: {'not a directory' if path.exists() else 'no such directory'}; "
                           f"expected {EXPECTED}")
    path = path.absolute()
    results = _load_yaml(path / "optimization_results.yaml")
    master = _load_yaml(path / "multirun.yaml")
    if results is None and master is None:
        raise NotASweepDir(f"{path}: no optimization_results.yaml or multirun.yaml in it; expected {EXPECTED}")
    configured = select(master, "hydra.sweeper.storage")
    if configured:
        recorded = select(results, "storage")
        storage = recorded if recorded and "***" not in str(recorded) else with_driver(str(configured))
    else:
        if not (path / "optuna.db").is_file():
            raise NotASweepDir(f"{path}: no optuna.db in it (the study of a sweep without "
                               f"hydra.sweeper.storage); expected {EXPECTED}")
        storage = f"sqlite:///{path / 'optuna.db'}"  # here, even if the directory was moved since
    name = select(results, "study_name") or select(master, "hydra.sweeper.study_name")
    objectives = select(master, "hydra.sweeper.objectives") or [select(master, "objective.metric") or "objective"]
    return SweepInfo(path, name, str(storage), hide_password(str(storage)), [str(o) for o in objectives], master)


def load_study(info: SweepInfo) -> Any:
    """The sweep's Optuna study (the storage's only study when no name was recorded)."""
    import optuna

    from lightopt.storage import open_storage, with_password

    with quiet_optuna():
        storage = open_storage(with_password(info.storage))
        names = [s.study_name for s in storage.get_all_studies()]
        name = info.study_name
        if name is None:
            if len(names) != 1:
                raise NotASweepDir(f"{info.sweep_dir}: no study_name in optimization_results.yaml and "
                                   f"{len(names)} studies in {info.storage_shown}; expected {EXPECTED}")
            name = info.study_name = names[0]
        if name not in names:
            raise NotASweepDir(f"{info.sweep_dir}: study {name!r} is not in {info.storage_shown} (it holds "
                               f"{names or 'no study'}); expected {EXPECTED}")
        return optuna.load_study(study_name=name, storage=storage)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's plots are flagged experimental and log about omitted trials: noise in a report."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    mpl_log = logging.getLogger("matplotlib")  # "Using categorical units ..." for choices like seeds
    mpl_level = mpl_log.level
    mpl_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        mpl_log.setLevel(mpl_level)
