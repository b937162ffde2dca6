"""A Hydra callback that refuses a single run into a directory that already holds a run, before Hydra writes
anything there (its ``.hydra/`` records, then the run's logs and checkpoints, would overwrite the earlier ones).

Kept free of torch and Lightning imports: Hydra builds it at the start of every ``python train.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightopt.checks import writable_dir
from lightopt.cli import EXIT_CONFIG_ERROR
from lightopt.contract import RESULTS_FILE
from lightopt.errors import ConfigError

#: what an earlier run leaves in its directory
RUN_TRACES = (RESULTS_FILE, "checkpoints", "metrics.csv")
# set by Lightning for the extra DDP ranks it starts: they join rank 0's run in its directory
_RANK_ENV = ("LOCAL_RANK", "NODE_RANK")


class FreshRunDir(Callback):
    """``hydra.callbacks.fresh_run_dir``: exit 2 when ``hydra.run.dir`` holds an earlier run's results,
    checkpoints or metrics (give a new directory, or ``ckpt_path=<dir>/checkpoints/last.ckpt`` to resume), or
    cannot be created and written to."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if any(os.environ.get(key) not in (None, "0") for key in _RANK_ENV):
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        try:
            found = [name for name in RUN_TRACES if (run_dir / name).exists()]
            if found:
                raise ConfigError("hydra.run.dir", str(run_dir), "a new directory (resume that run with "
                                  f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'} and another hydra.run.dir)",
                                  f"it holds an earlier run ({', '.join(found)}), which this run would overwrite")
            writable_dir("hydra.run.dir", run_dir)
        except ConfigError as err:
            print(f"lightopt: config error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG_ERROR)
