"""Several sweep processes may open one fresh SQLite storage at the same moment: none of them fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPEN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    from lightopt.storage import open_storage
    storage = open_storage(sys.argv[1])
    print(len(storage.get_all_studies()))
""")


def test_processes_opening_a_fresh_sqlite_storage_together_all_succeed(tmp_path):
    url, go = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "go"
    # imported and waiting before the start signal, so that they all create the schema at once
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    go.touch()
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-1500:] for _, err in outcomes if err]
    assert [out.strip() for out, _ in outcomes] == ["0"] * 6
