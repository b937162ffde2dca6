"""Locks and heartbeats of the sweep processes sharing one study.

Trial reservation is serialized across processes (a file lock for SQLite, an advisory lock for PostgreSQL), and
each process beats for its running trials so that another can tell a dead sweep's trials from live ones. Opening
storages and their URLs live in :mod:`lightopt.storage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna

from lightopt.storage import hide_password, sqlite_path

log = logging.getLogger(__name__)


class StudyLock:
    """Serializes trial reservation among the sweep processes of one study (this base class: no lock).

    ``alone`` is True when this process can tell that no other sweep process uses the storage, so that
    trials left RUNNING there belong to a dead sweep.
    """

    alone = False

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass

    @staticmethod
    def for_storage(url: str, storage: optuna.storages.RDBStorage, study_name: str) -> StudyLock:
        path = sqlite_path(url)
        if path is not None:
            return FileLock(path.with_name(path.name + ".lock"))
        if url.startswith("postgresql"):
            return PostgresLock(storage, study_name)
        log.warning("storage %s: trials are reserved without a lock; several sweep processes sharing this "
                    "study may together run more than n_trials (PostgreSQL and SQLite storages are locked)",
                    hide_password(url))
        return StudyLock()


class FileLock(StudyLock):
    """POSIX record locks on one file: byte 0 shared by every live sweep process, byte 1 held to reserve."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            self.alone = True
        except OSError:
            self.alone = False
        fcntl.lockf(self.fd, fcntl.LOCK_SH, 1, 0)  # atomic downgrade; waits only for a starting process

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 1)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 1)

    def close(self) -> None:
        os.close(self.fd)  # releases both locks


class PostgresLock(StudyLock):
    """A transaction-scoped advisory lock keyed by the study name: released at commit, or if the process dies."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self.engine = storage.engine
        digest = hashlib.blake2b(f"lightopt-sweep:{study_name}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big", signed=True)

    @contextlib.contextmanager
    def reserving(self) -> Iterator[None]:
        import sqlalchemy

        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.key})
            yield


class Heartbeat:
    """Records a heartbeat for each running trial of this process every ``interval`` seconds."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Sequence[int], interval: float) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lightopt-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # noqa: BLE001 - a missed beat is retried next interval
                    log.debug("heartbeat of trial id %s failed: %s", trial_id, err)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


