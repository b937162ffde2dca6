"""Test session settings and fixtures; shared helpers live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

from tests.helpers import QUICK

if "PYTEST_XDIST_WORKER" in os.environ:
    # one process per core already: torch's intra-op threads (and those of the runs the tests start, which
    # inherit OMP_NUM_THREADS) would only fight over the cores and make small models many times slower
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

@pytest.fixture
def quick() -> list[str]:
    return list(QUICK)
