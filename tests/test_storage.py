"""Optuna storages by URL: one form for the sweep and its jobs, and never a password in what is shown."""

from __future__ import annotations

import pytest

from lightopt.errors import ConfigError
from lightopt.storage import hide_password, open_storage, sqlite_path, with_driver


def test_hide_password_masks_only_the_password():
    assert hide_password("postgresql://user:PW@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert hide_password("mysql+pymysql://a:b@c/d?x=1") == "mysql+pymysql://a:***@c/d?x=1"
    assert hide_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert hide_password("not a url") == "not a url"


def test_sqlite_paths_become_absolute_for_jobs_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert with_driver("sqlite:///rel/x.db?timeout=5") == f"sqlite:///{tmp_path / 'rel' / 'x.db'}?timeout=5"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql://h/db") is None


def test_a_storage_that_cannot_be_opened_is_a_config_error_without_its_password():
    with pytest.raises(ConfigError, match=r"hydra.sweeper.storage='nosuchdb://u:\*\*\*@h/d'") as err:
        open_storage("nosuchdb://u:secret@h/d")
    assert "secret" not in str(err.value)
