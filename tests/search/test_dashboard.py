"""A sweep's study browsed with optuna-dashboard, as the README says: served on loopback, read back over HTTP."""

from __future__ import annotations

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from tests.helpers import rows, run_tiny

optuna_dashboard = pytest.importorskip("optuna_dashboard")  # the dev extra installs it


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_optuna_dashboard_serves_the_sweeps_study_and_its_trials(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_tiny("-m", "x=interval(0,2)", "y=choice(0,1)", "hydra.sweeper.n_trials=3",
                    f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(f"sqlite:///{sweep_dir / 'optuna.db'}"),
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        (summary,) = json.load(urllib.request.urlopen(base, timeout=30))["study_summaries"]
        study = json.load(urllib.request.urlopen(f"{base}/{summary['study_id']}", timeout=30))
    finally:
        server.shutdown()
        thread.join()
    assert summary["study_name"].startswith("app-") and summary["directions"] == ["minimize"]
    trials = {t["number"]: t for t in study["trials"]}
    for row in rows(sweep_dir):
        trial = trials[int(row["number"])]
        assert trial["state"] == "Complete" and trial["values"] == [pytest.approx(float(row["value"]))]
        assert {p["name"]: p["param_external_value"] for p in trial["params"]} == {"x": row["x"], "y": row["y"]}
