"""k-fold cross-validation (``cv=kfold``): its settings, each fold's samples, the protocol by which a data module
serves a fold, and the summary of the folds' objective values.

``k`` folds cut the data's samples (training and validation split together) into ``k`` parts; fold ``i``
trains on the other ``k - 1`` parts and validates on part ``i``. The folds come from scikit-learn's ``KFold``
or ``StratifiedKFold`` (each part then holds the classes in the proportions of the whole). Running the folds,
one fresh model each, is :func:`lightopt.run.training.run`'s; this module neither builds nor trains.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lightopt.checks import integer, one_of
from lightopt.errors import ConfigError

log = logging.getLogger(__name__)

CV_NAMES = ("none", "kfold")
KFOLD_KEYS = ("name", "folds", "stratified", "shuffle", "seed")
PROTOCOL = "cv_targets() and set_fold(train, val) (README: Cross-validation)"


@runtime_checkable
class FoldableData(Protocol):
    """What a data module needs for ``cv=kfold``: the shipped ones have it, a user's adds these two methods."""

    def cv_targets(self) -> Any:
        """One target per sample the folds are cut from (a sequence or tensor; its length is the sample count).
        Classes (integers) for classification data: stratified folds keep their proportions."""

    def set_fold(self, train: Sequence[int], val: Sequence[int]) -> None:
        """Serve the samples at positions ``train`` (of :meth:`cv_targets`) for training and ``val`` for
        validation, in place of the module's own split (called before ``setup``)."""


@dataclass(frozen=True)
class CVSettings:
    """The ``cv`` section of ``cv=kfold``, validated."""

    folds: int
    stratified: bool | None  # None: stratified for classification data
    shuffle: bool
    seed: int


def check_cv(cfg: Mapping[str, Any]) -> CVSettings | None:
    """The validated ``cv`` settings, or None without cross-validation (``cv=none`` or no section)."""
    section = cfg.get("cv")
    if section is None:
        return None
    name = one_of("cv.name", section.get("name", "none"), CV_NAMES)
    if name == "none":
        return None
    unknown = sorted(set(section) - set(KFOLD_KEYS))
    if unknown:
        raise ConfigError(f"cv.{unknown[0]}", section[unknown[0]], f"keys of cv=kfold: {', '.join(KFOLD_KEYS)}",
                          "unknown key")
    folds = integer("cv.folds", section.get("folds", 5), "an integer >= 2 (models trained, one per fold)", low=2)
    stratified = section.get("stratified")
    if stratified not in (None, True, False):
        raise ConfigError("cv.stratified", stratified, "null (by class for classification data) | true | false")
    shuffle = one_of("cv.shuffle", section.get("shuffle", True), (True, False))
    seed = integer("cv.seed", section.get("seed", 0), "an integer >= 0 (the seed of the samples' shuffle)", low=0)
    if cfg.get("ckpt_path"):
        raise ConfigError("cv.name", "kfold", "cv=none when resuming from ckpt_path",
                          "a checkpoint holds one fold's model; rerun the cross-validation instead")
    return CVSettings(folds, stratified, shuffle, seed)


def fold_dir_name(fold: int) -> str:
    """The run directory of fold ``fold`` (0-based) inside the run's: ``fold-1``, ``fold-2``, ..."""
    return f"fold-{fold + 1}"


def fold_samples(datamodule: Any, settings: CVSettings, task: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, val)`` sample positions of every fold, for ``datamodule``'s :meth:`FoldableData.cv_targets`."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not isinstance(datamodule, FoldableData):
        missing = [m for m in ("cv_targets", "set_fold") if not callable(getattr(datamodule, m, None))]
        raise ConfigError("cv.name", "kfold", f"cv=none, or a data module with {PROTOCOL}",
                          f"{type(datamodule).__name__} has no {' and no '.join(missing)}")
    targets = np.asarray(datamodule.cv_targets())
    n = len(targets)
    if settings.folds > n:
        raise ConfigError("cv.folds", settings.folds, f"at most the number of samples ({n})")
    stratified = task == "classification" if settings.stratified is None else settings.stratified
    if stratified and task != "classification":
        raise ConfigError("cv.stratified", True, f"false or null for {task} data",
                          "stratified folds keep class proportions: the data has no classes")
    seed = settings.seed if settings.shuffle else None  # scikit-learn refuses a seed it would not use
    if not stratified:
        return list(KFold(settings.folds, shuffle=settings.shuffle, random_state=seed).split(np.zeros(n)))
    labels = targets.reshape(n, -1)[:, 0] if targets.ndim > 1 else targets
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    if settings.folds > smallest:
        raise ConfigError("cv.folds", settings.folds, f"at most {smallest} (the samples of the smallest class), "
                          "or cv.stratified=false", "every stratified fold needs a sample of every class")
    splitter = StratifiedKFold(settings.folds, shuffle=settings.shuffle, random_state=seed)
    return list(splitter.split(np.zeros(n), labels))


def use_fold(datamodule: Any, settings: CVSettings, fold: int, task: str | None) -> None:
    """Make ``datamodule`` serve fold ``fold`` (0-based)."""
    train, val = fold_samples(datamodule, settings, task)[fold]
    datamodule.set_fold(train.tolist(), val.tolist())


@dataclass(frozen=True)
class CVSummary:
    """The folds' objective values, as the ``cv`` entry of ``results.json``."""

    folds: int  # folds asked for
    values: list[float]  # one per fold that ran to its end, in fold order
    mean: float
    std: float  # population standard deviation (ddof 0, as numpy's and scikit-learn's cross_val_score users report)
    run_dirs: list[str]  # the folds' run directories, in fold order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(folds: int, values: Sequence[float], run_dirs: Sequence[str]) -> CVSummary:
    """Mean and standard deviation of ``values`` (NaN for both without values)."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.pstdev(values) if values else math.nan
    return CVSummary(folds, values, mean, std, [str(d) for d in run_dirs])


def mean_metrics(per_fold: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each ``val/`` metric's final and best value averaged over the folds that logged it (``best_step``: none,
    the folds' best steps differ)."""
    names = sorted({name for metrics in per_fold for name in metrics})
    merged: dict[str, dict[str, Any]] = {}
    for name in names:
        records = [m[name] for m in per_fold if name in m]
        merged[name] = {"final": statistics.fmean(r["final"] for r in records),
                        "best": statistics.fmean(r["best"] for r in records), "best_step": None,
                        "direction": records[0]["direction"]}
    return merged
