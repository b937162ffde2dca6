"""What ``trainer=fsdp`` configures beyond Lightning's own keys: the module classes FSDP wraps as units.

Lightning's ``FSDPStrategy`` takes ``auto_wrap_policy`` as a set of ``nn.Module`` classes; a YAML file can only
name them, so :func:`module_classes` imports them by dotted path. The strategy itself is Lightning's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightopt.errors import ConfigError


def module_classes(classes: Sequence[str]) -> set[type[nn.Module]]:
    """The ``nn.Module`` subclasses named by ``classes`` (dotted paths, e.g. ``lightopt.run.models.Block``)."""
    from hydra.utils import get_class

    found: set[type[nn.Module]] = set()
    for path in classes:
        try:
            cls = get_class(path)
        except Exception as err:  # noqa: BLE001 - any import failure is the same user error
            raise ConfigError("trainer.strategy.auto_wrap_policy.classes", path, "dotted paths of nn.Module classes",
                              f"cannot import it ({err})") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError("trainer.strategy.auto_wrap_policy.classes", path, "dotted paths of nn.Module classes",
                              "not an nn.Module subclass")
        found.add(cls)
    return found
