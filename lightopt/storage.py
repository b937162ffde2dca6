"""Optuna storages by URL: the form the sweep and its jobs share, opening one, and keeping its password off disk.

A storage password never goes into a file lightopt writes: URLs are recorded with ``***`` in its place
(:func:`hide_password`), and the processes that need the real URL (the sweep's jobs, ``python -m
lightopt.report``) take the password from the environment variable :data:`PASSWORD_ENV`, which the sweeper
sets for the processes it starts (:func:`with_password`). The locks that serialize trial reservation and the
trials' heartbeat live with the sweeper (:mod:`lightopt.search.locks`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightopt.errors import ConfigError

if TYPE_CHECKING:
    import optuna

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)
#: the environment variable holding the storage password for the processes of a sweep
PASSWORD_ENV = "LIGHTOPT_STORAGE_PASSWORD"
STORAGE_ALLOWED = "a database URL: sqlite:///path/to/file.db, postgresql://user:password@host/db, ..."
# a fixed 64-bit key for the PostgreSQL schema lock; study locks are keyed by a hash of the study name
_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"lightopt-schema", digest_size=8).digest(), "big", signed=True)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (None for other URLs or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def hide_password(url: str) -> str:
    """``url`` with its password shown as ``***`` (SQLAlchemy's own rendering); text that is no URL unchanged."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL: nothing to hide
        return url


def hide_passwords(text: str) -> str:
    """``text`` (an override, a command-line argument) with the password of every URL in it shown as ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)


def password_of(url: str) -> str | None:
    """The password in ``url``, or None (no URL, no password, or one already hidden)."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - not a database URL
        return None
    return None if password in (None, "", "***") else str(password)


def with_password(url: str) -> str:
    """``url`` with a hidden password (``***``) replaced by the one in :data:`PASSWORD_ENV`.

    Raises:
        ConfigError: the URL hides its password and the environment does not hold it.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL: nothing to fill in
        return url
    if parsed.password != "***":
        return url
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise ConfigError("hydra.sweeper.storage", url, f"the storage's password in the environment variable "
                          f"{PASSWORD_ENV}", "its password is not recorded on disk")
    return parsed.set(password=password).render_as_string(hide_password=False)


def with_driver(url: str) -> str:
    """The storage URL as the sweep and its jobs use it.

    A relative SQLite path becomes absolute (a job may run elsewhere); a bare ``postgresql://`` names the
    PostgreSQL driver that is installed (``postgresql+psycopg2://``): SQLAlchemy's default changed from
    psycopg2 (2.0) to psycopg 3 (2.1).
    """
    path = sqlite_path(url)
    if path is not None and not path.is_absolute():
        query = url.partition("?")[1] + url.partition("?")[2]
        return f"sqlite:///{path.absolute()}{query}"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None, *,
                 existing: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``; the sweeper passes heartbeat settings, a job does not need them.

    ``existing``: the tables are there and were checked (a trial's job opens the storage its sweep made), so
    neither creating nor checking them again costs each trial its tens of milliseconds.
    """
    import optuna

    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the sweep, its heartbeat and its jobs all write to one file: wait for its lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs["pool_pre_ping"] = True  # survive a database restart during a long sweep
    try:
        with warnings.catch_warnings(), contextlib.nullcontext() if existing else _schema_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=existing,
                                              skip_table_creation=existing, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period)
    except Exception as err:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        raise ConfigError("hydra.sweeper.storage", hide_password(url), STORAGE_ALLOWED,
                          f"cannot open it ({type(err).__name__}: {err})".splitlines()[0]) from None


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """One process at a time opens a PostgreSQL or SQLite storage.

    Opening creates Optuna's tables when they are missing; sweep workers started together on a fresh
    database would otherwise collide in ``CREATE TABLE`` (or the ``alembic_version`` insert) and all but one
    fail. PostgreSQL: a session-level advisory lock, released when the connection closes or its process dies.
    SQLite: a POSIX lock on byte 2 of ``<db>.lock`` (the sweep's study lock holds bytes 0 and 1), released
    when the process closes the file or dies.
    """
    path = sqlite_path(url)
    if path is not None:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 2)
            yield
        finally:
            os.close(fd)
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()
