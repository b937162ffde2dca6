"""Speed knobs of the ``trainer`` config group that Lightning's ``Trainer`` does not take: ``precision: auto``,
``tf32``, ``compile`` and ``threads``.

:func:`configure` resolves them before the trainer is built and returns the trainer config without them. The
decisions are pure functions of the device's capabilities (:func:`choose_precision`, :func:`use_tf32`,
:func:`compile_options`), so they are tested on machines without a GPU. What each setting means is in the
README ("Speed") and ``conf/trainer/default.yaml``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightopt.errors import ConfigError

__all__ = ["SPEED_KEYS", "choose_precision", "choose_threads", "compile_options", "configure",
           "device_flags", "threads_for_ranks", "use_tf32"]

log = logging.getLogger(__name__)

#: Keys of the ``trainer`` group that lightopt resolves itself; they never reach ``lightning.Trainer``.
SPEED_KEYS = ("compile", "tf32", "threads")
THREADS_ENV = "OMP_NUM_THREADS"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# accelerators that are, or may resolve to, a CUDA GPU
_CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def uses_cuda(accelerator: Any, cuda_available: bool) -> bool:
    """Whether a trainer with ``accelerator`` runs on a CUDA GPU (``auto`` and ``gpu`` pick CUDA when present)."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    return cuda_available and any(name.startswith(a) for a in _CUDA_ACCELERATORS)


def choose_precision(requested: Any, *, accelerator: Any, cuda_available: bool, bf16_supported: bool) -> Any:
    """The ``precision`` to give Lightning for ``trainer.precision=requested``.

    ``"auto"`` becomes ``"bf16-mixed"`` on a CUDA GPU with bf16 support, else ``"32-true"``; any other
    value is returned unchanged.
    """
    if requested != "auto":
        return requested
    return "bf16-mixed" if uses_cuda(accelerator, cuda_available) and bf16_supported else "32-true"


def use_tf32(requested: Any, *, accelerator: Any, cuda_available: bool,
             capability: tuple[int, int] | None) -> bool | None:
    """Whether to allow TF32 matmuls: ``True``/``False`` to set, ``None`` to leave torch's setting alone.

    ``True`` needs ``requested`` and a CUDA run on a GPU of compute ``capability`` >= (8, 0) (Ampere:
    A100, RTX 30xx, and newer: H100, ...). ``False`` when TF32 was turned off on a CUDA run. ``None``
    when the run does not use CUDA, or the GPU has no TF32 (nothing to switch).
    """
    if not isinstance(requested, bool):
        raise ConfigError("trainer.tf32", requested, "true | false")
    if not uses_cuda(accelerator, cuda_available) or capability is None or tuple(capability) < (8, 0):
        return None
    return requested


def compile_options(value: Any) -> dict[str, Any] | None:
    """Keyword arguments for ``torch.compile`` from ``trainer.compile``, or ``None`` for no compilation."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value in COMPILE_MODES:
        return {"mode": value}
    raise ConfigError("trainer.compile", value, "false | true | " + " | ".join(COMPILE_MODES))


def choose_threads(requested: Any, *, cores: int, processes: int, environment: str | None) -> tuple[int, str]:
    """torch's CPU threads per process for ``trainer.threads=requested``, and why (the run panel shows both).

    ``auto``: ``OMP_NUM_THREADS`` when the environment sets it (a user's choice, or the launching rank's),
    else ``cores // processes`` (at least 1), where ``processes`` run at once on those ``cores``: a DDP
    run's ranks on this machine (a sweep's trials in flight already divided ``cores``). More threads than
    cores only make the processes take the cores from each other: under load a small model ran 2.3x slower
    with 2 threads per process than with 1. An integer >= 1: that many.
    """
    if requested == "auto":
        if environment is not None and environment.strip().isdigit() and int(environment) >= 1:
            return int(environment), f"{THREADS_ENV}={int(environment)}"
        count = max(1, cores // max(1, processes))
        return count, f"auto: {cores} cores / {processes} process{'es' if processes > 1 else ''}"
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ConfigError("trainer.threads", requested, "auto | an integer >= 1 (torch CPU threads per process)")
    return requested, "trainer.threads"


@contextlib.contextmanager
def threads_for_ranks(threads: int, distributed: bool) -> Iterator[None]:
    """While a DDP run starts its ranks: ``OMP_NUM_THREADS`` set to the threads chosen, so that Lightning's
    launcher (which sets its own count when the variable is unset) keeps them and every rank inherits them."""
    if not distributed or THREADS_ENV in os.environ:
        yield
        return
    os.environ[THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        os.environ.pop(THREADS_ENV, None)


def device_flags() -> dict[str, Any]:
    """The capabilities the decisions depend on, read from this machine."""
    cuda = torch.cuda.is_available()
    return {
        "cuda_available": cuda,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "capability": torch.cuda.get_device_capability() if cuda else None,
    }


def configure(trainer_cfg: DictConfig, model: torch.nn.Module, flags: dict[str, Any] | None = None) -> DictConfig:
    """Apply ``trainer.tf32`` and ``trainer.compile`` and resolve ``precision: auto``.

    Compiles ``model`` in place when asked, sets the float32 matmul precision for CUDA runs, and returns a
    copy of ``trainer_cfg`` for ``lightning.Trainer``: without :data:`SPEED_KEYS` and with a concrete
    ``precision``. ``flags`` (default: :func:`device_flags`) lets tests pretend to be another machine.
    """
    flags = device_flags() if flags is None else flags
    cfg = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(cfg, dict)
    compile_value = cfg.pop("compile", False)
    tf32_value = cfg.pop("tf32", True)
    cfg.pop("threads", None)  # set once the trainer knows its ranks (choose_threads)
    accelerator = cfg.get("accelerator", "auto")

    options = compile_options(compile_value)
    tf32 = use_tf32(tf32_value, accelerator=accelerator, cuda_available=flags["cuda_available"],
                    capability=flags["capability"])
    requested = cfg.get("precision")
    precision = choose_precision(requested, accelerator=accelerator, cuda_available=flags["cuda_available"],
                                 bf16_supported=flags["bf16_supported"])
    if requested == "auto":
        log.debug("trainer.precision=auto: %s", precision)  # the run panel shows it
    cfg["precision"] = precision
    if tf32 is not None:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
    if options is not None:
        log.info("trainer.compile=%s: torch.compile(model%s)", compile_value,
                 "".join(f", {k}={v!r}" for k, v in options.items()))
        # a fresh run (e.g. the next trial of an in-process sweep): drop the compiled code of earlier models,
        # so that dynamo's recompilation limit never silently falls back to eager
        torch._dynamo.reset()
        model.compile(**options)
    return OmegaConf.create(cfg)
