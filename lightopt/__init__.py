"""lightopt: optimizers, learning-rate schedules and hyperparameter search for Lightning, configured with Hydra."""

from typing import Any

from lightopt.errors import ConfigError

__all__ = ["ConfigError", "LightoptMixin", "configure_optimizers"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The plugin needs torch and Lightning; importing them lazily keeps `python train.py --help`, config
    # errors and `python -m lightopt.report` from paying seconds for imports they never use.
    if name in ("LightoptMixin", "configure_optimizers"):
        from lightopt import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module 'lightopt' has no attribute {name!r}")
