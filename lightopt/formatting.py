"""Numbers for people: the one formatter of console panels, sweep tables, reports and run names."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """``-`` for None, ``true``/``false``, ints as they are, floats to ``digits`` significant digits, ``∞``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}g}"
    return str(value)


def count(value: Any) -> str:
    """An integer count with thousands separators (``124,439,808``); anything else as :func:`fmt`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return fmt(value)


def short_number(text: str, digits: int = 4) -> str:
    """Override text of a number shortened to ``digits`` significant digits when that is shorter."""
    try:
        value = float(text)
    except ValueError:
        return text
    short = f"{value:.{digits}g}"
    return short if len(short) < len(text) else text


def error_text(err: BaseException) -> str:
    """``TypeName: message`` of an exception, as trial records and warnings show it."""
    return f"{type(err).__name__}: {err}".strip()
