"""What every benchmark case shares: judging whether its rounds agree well enough to be read."""

from __future__ import annotations

import statistics
from typing import Any

NOISY = 0.15  # rounds whose ratios spread wider than this share of their median: the machine was too busy to judge


def spread(ratios: list[float]) -> dict[str, Any]:
    """The per-round ratios of a case, their spread ((max - min) / median) and whether that is too wide."""
    if len(ratios) < 2:
        return {"round_ratios": [round(r, 3) for r in ratios]}
    width = (max(ratios) - min(ratios)) / statistics.median(ratios)
    return {"round_ratios": [round(r, 3) for r in ratios], "spread": round(width, 3), "noisy": width > NOISY}
