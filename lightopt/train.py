"""``python -m lightopt.train [group=choice ...] [key=value ...]``: a training run on lightopt's shipped configs.

Works from an installed wheel in any directory; the checkout's ``train.py`` is the same run over ``conf/``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lightopt.cli import exit_on_config_error


def task(cfg: DictConfig) -> float:
    """Train once from a composed config; a bad value exits 2 with one line (a sweep records it instead)."""
    # imported here so that --help and config-composition errors answer without loading torch
    from lightopt.run.training import run

    with exit_on_config_error():
        return run(cfg)


@hydra.main(version_base="1.3", config_path="pkg://lightopt.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return task(cfg)


if __name__ == "__main__":
    main()
