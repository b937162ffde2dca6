"""Checks of single config values, each raising :class:`ConfigError` with the key, the value and what is allowed.

Every module that validates its config section uses these; checks of a whole section (which keys it may
have, how they relate) stay with the section's own module.
"""

from __future__ import annotations

import math
import numbers
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightopt.errors import ConfigError


def is_real(value: Any) -> bool:
    """A real number that is not a bool (YAML's ``true`` is not a learning rate)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(
    key: str,
    value: Any,
    allowed: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float within ``[low, high]`` (an end excluded when ``*_open``).

    NaN is never a number here; infinities only with ``finite=False``. A string gets the hint that YAML 1.1
    reads ``1e-3`` as a string.
    """
    if not is_real(value) or math.isnan(value) or (finite and math.isinf(value)):
        problem = "not a number" if not is_real(value) or math.isnan(value) else "not finite"
        if isinstance(value, str):
            problem += " (YAML 1.1 reads 1e-3 as a string: write 1.0e-3)"
        raise ConfigError(key, value, allowed, problem)
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(key, value, allowed, "too small")
    if high is not None and (v > high or (high_open and v == high)):
        raise ConfigError(key, value, allowed, "too large")
    return v


def integer(key: str, value: Any, allowed: str, *, low: int | None = None) -> int:
    """``value`` as an int >= ``low``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(key, value, allowed, "not an integer")
    if low is not None and value < low:
        raise ConfigError(key, value, allowed, "too small")
    return int(value)


def one_of(key: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``; the message lists them as ``a | b | c``."""
    if value not in choices:
        raise ConfigError(key, value, " | ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices))
    return value


def writable_dir(key: str, path: str | Path, allowed: str = "a directory this process can create and write to") -> Path:
    """``path`` as a directory, created if missing, into which a file can be written (probed with a temporary one)."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        reason = f"{type(err).__name__}: {err.strerror or err}"
        raise ConfigError(key, str(path), allowed, f"cannot write there ({reason})") from None
    return directory
