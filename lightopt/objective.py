"""Directions of an objective: which values are better, and the worst value a failed run gets."""

from __future__ import annotations

import math
import re

from lightopt.errors import ConfigError

DIRECTIONS = ("minimize", "maximize")
# metrics where larger is better; every other metric (losses, errors) is taken as lower-is-better
_HIGHER_IS_BETTER = re.compile(r"acc|f1|auc|auroc|r2|precision|recall|iou|map\b|score|psnr|ssim", re.I)


def check_direction(direction: str, key: str = "objective.direction") -> str:
    """``direction`` when it is ``minimize`` or ``maximize``, else a :class:`ConfigError` naming ``key``."""
    if direction not in DIRECTIONS:
        raise ConfigError(key, direction, " | ".join(DIRECTIONS))
    return direction


def metric_direction(name: str) -> str:
    """``"maximize"`` for accuracy-like metric names, else ``"minimize"``."""
    return "maximize" if _HIGHER_IS_BETTER.search(name) else "minimize"


def worst_value(direction: str) -> float:
    """The objective of a run that diverged or failed: the worst value for its direction."""
    return -math.inf if direction == "maximize" else math.inf


def better(a: float, b: float, direction: str) -> bool:
    """Whether ``a`` improves on ``b``; any number improves on NaN."""
    if math.isnan(b):
        return not math.isnan(a)
    return a > b if direction == "maximize" else a < b
