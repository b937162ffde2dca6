"""The CPU cores this process may run on: what a run's torch threads and a sweep's trials in flight share."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores of this process's affinity mask (a container's or ``taskset``'s share), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
