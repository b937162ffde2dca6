"""Command-line glue shared by the Hydra entry points (``train.py``, ``python -m lightopt.preview``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightopt.errors import ConfigError

EXIT_CONFIG_ERROR = 2
# a run or sweep stopped by a signal: 128 + its number, as a shell reports it
EXIT_SIGINT = 130  # Ctrl-C
EXIT_SIGTERM = 143  # what SLURM and Kubernetes send before they kill


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a :class:`ConfigError` into one clear line on stderr and exit code 2.

    In a multirun the error is re-raised instead, so the sweeper can record the trial as failed.
    """
    try:
        yield
    except ConfigError as err:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"lightopt: config error: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG_ERROR)
