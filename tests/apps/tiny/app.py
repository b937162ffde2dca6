"""A tiny Hydra app: returns (x - 1)^2 + y^2 after ``sleep`` seconds, raises at ``fail_if``."""

import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    time.sleep(cfg.sleep)
    if cfg.fail_if is not None and cfg.fail_if in (cfg.x, cfg.y):
        raise RuntimeError(f"failing at {cfg.fail_if}")
    return (cfg.x - 1) ** 2 + cfg.y**2


if __name__ == "__main__":
    main()
