"""DDP inside a Hydra multirun: how a sweep trial starts the other ranks of its training run.

Lightning's DDP launcher starts ranks 1..N-1 by running the command line of the *process* again. Inside a sweep
that command is the whole sweep (or, in a parallel launcher's worker, not the script at all), and Lightning
points each rank at a new ``hydra.run.dir``. :func:`trial_ranks_in_job_dir` gives them the command of the
*trial* instead: the sweep's entry point (from the trial's :class:`~lightopt.contract.TrialContext`), the
trial's task overrides and its run directory, where every rank finds the same context. Only rank 0 writes
results, logs and checkpoints there. Single runs (``python train.py trainer=ddp``) need none of this.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt.contract import TrialContext


def own_entry_point() -> list[str]:
    """The command that starts this program again: ``python script.py`` or ``python -m package.module``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is None:
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", spec.name]


def rank_command(entry: Sequence[str], task_overrides: Sequence[str], job_dir: str | Path, job_name: str,
                 local_rank: int) -> list[str]:
    """The command line of ``local_rank`` of a trial: a single run of the trial's config in ``job_dir``."""
    return [
        *entry,
        *task_overrides,
        # quoted: Hydra's override grammar would split a path holding '=' or ','
        f'hydra.run.dir="{Path(job_dir).resolve()}"',
        f"hydra.job.name={job_name}_rank{local_rank}",
        "hydra.output_subdir=null",  # rank 0 has written .hydra/ already
    ]


# what Lightning's DDP launcher leaves in the environment; a later trial in the same process would take
# them for a launch by torchrun and wait for ranks that never come
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass
class RankLaunch:
    """The trainer that started a trial's DDP ranks (the first one fitted in the block), to wait for them."""

    trainer: Any = None


@contextlib.contextmanager
def trial_ranks_in_job_dir(context: TrialContext | None) -> Iterator[RankLaunch]:
    """Within a Hydra multirun job, make Lightning start DDP ranks as single runs of this trial.

    The ranks start with ``context.entry_point`` (this process's own command when there is no context). Set
    the yielded :class:`RankLaunch`'s ``trainer`` before the first fit: every later trainer in the block (the
    folds of a cross-validation) runs on the ranks that one started, as the ranks run the same folds.

    On leaving, the trial's ranks have exited and the process is as before: no process group, no launch
    variables, so that the next trial of the sweep starts its own ranks. Outside a multirun (or without
    Hydra) it does nothing.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    launch = RankLaunch()
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield launch
        return
    # Lightning asks this function for the command of each extra rank when Hydra is in use; it has had
    # this name and signature since Lightning 2.0. Replacing it is the one way to change the command.
    from lightning.pytorch.strategies.launchers import subprocess_script

    hydra = HydraConfig.get()
    entry = list(context.entry_point) if context is not None and context.entry_point else own_entry_point()
    task = list(hydra.overrides.task)
    job_dir, job_name, cwd = hydra.runtime.output_dir, hydra.job.name, hydra.runtime.cwd

    def command(local_rank: int) -> tuple[list[str], str]:
        return rank_command(entry, task, job_dir, job_name, local_rank), cwd

    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        raise RuntimeError("this Lightning version cannot be told how to start DDP ranks inside a sweep; "
                           "run DDP trials as single runs or use lightning>=2.0,<3")
    original = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = command
    saved_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    try:
        yield launch
    finally:
        subprocess_script._hydra_subprocess_cmd = original
        _end_trial_ranks(launch.trainer, saved_env)


def _end_trial_ranks(trainer: Any, saved_env: dict[str, str | None]) -> None:
    import torch.distributed as dist

    strategy = getattr(trainer, "strategy", None)
    for proc in getattr(getattr(strategy, "launcher", None), "procs", None) or []:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
