"""lightopt: optimizers, learning-rate schedules and hyperparameter search for Lightning, configured with Hydra.

The plugin's public API: :func:`configure_optimizers`, :class:`LightoptMixin` and :func:`weight_averaging` (the
optimisation core, for any LightningModule and Trainer), :class:`OptunaPruning` (a callback that lets a lightopt
sweep prune the user's own runs), and :class:`ConfigError`. The packages below show the architecture:
``lightopt.core`` <- ``lightopt.run`` <- ``lightopt.search``.
"""

from typing import Any

from lightopt.errors import ConfigError

__all__ = ["ConfigError", "LightoptMixin", "OptunaPruning", "configure_optimizers", "weight_averaging"]
__version__ = "0.1.0"

# the module each lazily imported name lives in
_LAZY = {"LightoptMixin": "lightopt.core.plugin", "configure_optimizers": "lightopt.core.plugin",
         "OptunaPruning": "lightopt.run.pruning", "weight_averaging": "lightopt.core.averaging"}


def __getattr__(name: str) -> Any:
    # The API needs torch and Lightning; importing them lazily keeps `python train.py --help`, config
    # errors and `python -m lightopt.report` from paying seconds for imports they never use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightopt' has no attribute {name!r}")
