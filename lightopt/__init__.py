"""lightopt: optimizers, learning-rate schedules and hyperparameter search for Lightning, configured with Hydra."""

from lightopt.errors import ConfigError

__all__ = ["ConfigError"]
__version__ = "0.1.0"
