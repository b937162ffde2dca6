"""lightopt: optimizers, learning-rate schedules and hyperparameter search for Lightning, configured with Hydra."""

from lightopt.errors import ConfigError
from lightopt.plugin import LightoptMixin, configure_optimizers

__all__ = ["ConfigError", "LightoptMixin", "configure_optimizers"]
__version__ = "0.1.0"
