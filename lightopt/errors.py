"""The one error type lightopt raises for bad configuration.

Every check that rejects user input raises :class:`ConfigError`, so the entry points can print one clear
line (the key, the bad value, what is allowed) and exit non-zero before any training starts.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that lightopt cannot use.

    Args:
        key: dotted config key, e.g. ``"schedule.warmup"``.
        value: the offending value.
        allowed: what would be accepted, e.g. ``"a number > 0"``.
        problem: optional short statement of what is wrong with it.
    """

    def __init__(self, key: str, value: Any, allowed: str, problem: str | None = None) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        self.problem = problem
        what = f"{problem}; " if problem else ""
        super().__init__(f"{key}={value!r}: {what}allowed: {allowed}")
