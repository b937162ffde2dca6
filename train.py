"""Train a model with lightopt: `python train.py [group=choice ...] [key=value ...]`.

Examples:
    python train.py                                   # MLP on scikit-learn's digits, Adam + cosine
    python train.py optimizer=momentum schedule=step  # switch optimizer and schedule
    python train.py experiment=regression             # linear regression recovering y = 2x + 1
"""

import hydra
from omegaconf import DictConfig

from lightopt.cli import exit_on_config_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # imported here so that --help and config-composition errors answer without loading torch
    from lightopt.train import run

    with exit_on_config_error():
        return run(cfg)


if __name__ == "__main__":
    main()
