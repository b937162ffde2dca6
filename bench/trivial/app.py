"""The trivial Hydra app of the sweeper benchmarks: returns x^2 + y^2 at once (no torch, no training), so a
sweep of it measures what each job costs the sweeper and Hydra, and nothing else."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    main()
