"""``hydra.sweeper.n_jobs`` > 1: the sweep's other processes, each running trials one after another on the study.

Every process (this one included) reserves its next trial as soon as its last one ended and tells the result at
once, so ``n_jobs`` trials stay in flight and no trial waits for another; the study lock keeps the total at
``n_trials``. Each worker runs the sweep's own command with ``n_jobs=1``, the resolved study, storage and sweep
directory, and (with ``gpu_per_trial``) its own device; its console goes to ``worker-<k>.log`` in the sweep
directory. The loop each process runs is :mod:`lightopt.search.study_loop`'s.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightopt.cores import available_cores


def worker_command(entry: Sequence[str], arguments: Sequence[str], k: int, *, study_name: str, storage: str,
                   sweep_dir: Path) -> list[str]:
    """The command line of worker ``k``: the sweep's own command, with its study, storage and directory resolved
    (a timestamped ``hydra.sweep.dir`` or a study name hashed from the space would differ in a later process)."""
    from lightopt.search.space import quote

    return [*entry, *arguments, f"hydra.sweeper.worker={k}", f"hydra.sweeper.study_name={quote(study_name)}",
            f"hydra.sweeper.storage={quote(storage)}", f"hydra.sweep.dir={quote(str(sweep_dir))}"]


def _end_with_parent() -> None:
    """In the worker, before it starts: SIGTERM when the first process dies (Linux), so that a killed sweep leaves
    no worker running on; the worker then records its trial as interrupted, like any stopped sweep."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_threads(n_jobs: int) -> int | None:
    """Torch threads per trial when ``n_jobs`` trials share this machine's cores; None for one trial at a time."""
    if n_jobs < 2:
        return None
    return max(1, available_cores() // n_jobs)


@dataclass
class Workers:
    """The worker processes of a sweep, started at once; :meth:`stop` and :meth:`wait` end them."""

    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, commands: Sequence[Sequence[str]], sweep_dir: Path) -> Workers:
        workers = cls()
        for k, command in enumerate(commands, start=1):
            path = sweep_dir / f"worker-{k}.log"
            with open(path, "ab") as out:
                workers.processes.append(subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                                          stdin=subprocess.DEVNULL, preexec_fn=_end_with_parent))
            workers.logs.append(path)
        return workers

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the running workers to stop as the sweep does (their running trials are recorded)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signum)

    def wait(self, timeout: float | None = None) -> list[int | None]:
        """Wait for every worker; their exit codes (None for one still running after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        codes: list[int | None] = []
        for proc in self.processes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                codes.append(proc.wait(left))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes
