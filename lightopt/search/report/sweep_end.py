"""What the sweeper does when a sweep ends (:func:`after_sweep`): build the report, then publish it to W&B
(:mod:`lightopt.search.wandb_summary`) when the trials logged there, without ever failing the sweep."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightopt.search.report.build import make_report
from lightopt.search.wandb_summary import log_to_wandb, wandb_settings

log = logging.getLogger(__name__)


def after_sweep(sweep_dir: str | Path, study: Any = None, configs: Iterable[Any] = ()) -> Path | None:
    """Build the report, then log it to W&B if the trials used W&B.

    ``configs``: the sweep's master config and the trials' composed configs (where the W&B settings are
    found). Never raises (a sweep that ran is not failed by its report): problems become a warning naming
    the command that retries. Returns the report's path, or None when it could not be built.
    """
    retry = f"build it again with: python -m lightopt.report {sweep_dir}"
    try:
        report = make_report(sweep_dir, study)
    except KeyboardInterrupt:
        log.warning("sweep report interrupted; %s", retry)
        return None
    except Exception as err:  # noqa: BLE001
        log.warning("the sweep report could not be built (%s: %s); %s", type(err).__name__, err, retry)
        return None
    try:
        settings = wandb_settings(configs)
        if settings is not None:
            log_to_wandb(report, settings)
    except KeyboardInterrupt:
        log.warning("the W&B sweep summary was interrupted")
    except Exception as err:  # noqa: BLE001
        log.warning("the W&B sweep summary could not be logged (%s: %s)", type(err).__name__, err)
    return report.html
