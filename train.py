"""Train a model with lightopt: `python train.py [group=choice ...] [key=value ...]`.

Examples:
    python train.py                                   # MLP on scikit-learn's digits, Adam + cosine
    python train.py optimizer=momentum schedule=step  # switch optimizer and schedule
    python train.py experiment=regression             # linear regression recovering y = 2x + 1
"""

import hydra
from omegaconf import DictConfig

from lightopt.train import task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return task(cfg)


if __name__ == "__main__":
    main()
