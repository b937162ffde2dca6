"""DDP inside a Hydra multirun: how a sweep trial starts the other ranks of its training run.

Lightning's DDP launcher starts ranks 1..N-1 by running the script again with the command line of the
*process*. Inside ``python train.py -m ...`` that command line is the whole sweep, so every extra rank
would start a sweep of its own, and Lightning points them at ``hydra.run.dir``, a new directory per rank.
:func:`trial_ranks_in_job_dir` gives those ranks the command line of the *trial* instead: its own task
overrides (the searched values included), the sweeper keys through which a job finds its Optuna trial,
and the trial's run directory, so that all ranks compose the same config and share one directory. Only
rank 0 writes results, logs and checkpoints there (see :mod:`lightopt.train`).

Single runs (``python train.py trainer=ddp``) need none of this: Lightning's own command is right there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# set by the sweeper (a JSON list): how the script was started, for ranks launched from a worker process of a parallel
# launcher (joblib), whose own command line is not the script's
ENTRY_POINT_ENV = "LIGHTOPT_ENTRY_POINT"
# the sweeper keys a job needs to re-attach to its Optuna trial (see lightopt.pruning.current_sweep_trial)
_TRIAL_KEYS = ("hydra.sweeper.storage=", "hydra.sweeper.study_name=", "hydra.sweeper.trial=")


def entry_point() -> list[str]:
    """The command that starts this program again: ``python script.py`` or ``python -m package.module``
    (in a worker of a sweep's parallel launcher: the sweep's, see :func:`entry_point_for_workers`)."""
    if os.environ.get(ENTRY_POINT_ENV):
        return list(json.loads(os.environ[ENTRY_POINT_ENV]))
    return _own_entry_point()


@contextlib.contextmanager
def entry_point_for_workers() -> Iterator[None]:
    """While a sweep runs, tell the processes it starts how this program was started.

    Only for its duration: a process that ran a sweep in-process (a notebook, a test) must not hand its own
    command to every later ``python train.py`` it starts.
    """
    previous = os.environ.get(ENTRY_POINT_ENV)
    os.environ[ENTRY_POINT_ENV] = json.dumps(_own_entry_point())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENTRY_POINT_ENV, None)
        else:
            os.environ[ENTRY_POINT_ENV] = previous


def _own_entry_point() -> list[str]:
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is None:
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", spec.name]


def rank_command(entry: Sequence[str], task_overrides: Sequence[str], hydra_overrides: Sequence[str],
                 job_dir: str | Path, job_name: str, local_rank: int) -> list[str]:
    """The command line of ``local_rank`` of a trial: a single run of the trial's config in ``job_dir``."""
    trial_keys = [o for o in hydra_overrides if o.startswith(_TRIAL_KEYS)]
    return [
        *entry,
        *task_overrides,
        *trial_keys,
        # quoted: Hydra's override grammar would split a path holding '=' or ','
        f'hydra.run.dir="{Path(job_dir).resolve()}"',
        f"hydra.job.name={job_name}_rank{local_rank}",
        "hydra.output_subdir=null",  # rank 0 has written .hydra/ already
    ]


# what Lightning's DDP launcher leaves in the environment; a later trial in the same process would take
# them for a launch by torchrun and wait for ranks that never come
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def trial_ranks_in_job_dir(trainer: Any) -> Iterator[None]:
    """Within a Hydra multirun job, make Lightning start DDP ranks as single runs of this trial.

    On leaving, the trial's ranks have exited and the process is as before: no process group, no launch
    variables, so that the next trial of the sweep starts its own ranks. Outside a multirun (or without
    Hydra) it does nothing.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    # Lightning asks this function for the command of each extra rank when Hydra is in use; it has had
    # this name and signature since Lightning 2.0. Replacing it is the one way to change the command.
    from lightning.pytorch.strategies.launchers import subprocess_script

    hydra = HydraConfig.get()
    entry = entry_point()
    task, hydra_overrides = list(hydra.overrides.task), list(hydra.overrides.hydra)
    job_dir, job_name, cwd = hydra.runtime.output_dir, hydra.job.name, hydra.runtime.cwd

    def command(local_rank: int) -> tuple[list[str], str]:
        return rank_command(entry, task, hydra_overrides, job_dir, job_name, local_rank), cwd

    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        raise RuntimeError("this Lightning version cannot be told how to start DDP ranks inside a sweep; "
                           "run DDP trials as single runs or use lightning>=2.0,<3")
    original = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = command
    saved_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = original
        _end_trial_ranks(trainer, saved_env)


def _end_trial_ranks(trainer: Any, saved_env: dict[str, str | None]) -> None:
    import torch.distributed as dist

    for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []:
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
