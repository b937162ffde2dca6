"""Trial configs composed once per shape: every copy equals what Hydra composes for the same overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from lightopt.search.composing import TrialConfigs

CONFIG = """\
x: 0.0
y: 1
name: base-${x}
hydra:
  sweep:
    subdir: ${hydra.job.override_dirname}
"""


class CountingLoader:
    """Hydra's loader, counting its compositions."""

    def __init__(self, loader):
        self.loader, self.calls = loader, 0

    def load_sweep_config(self, master, overrides):
        self.calls += 1
        return self.loader.load_sweep_config(master, overrides)


@pytest.fixture
def hydra_loader(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=["hydra/sweeper=basic"], run_mode=RunMode.MULTIRUN)
        yield loader, master
    GlobalHydra.instance().clear()


def as_dict(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


def test_a_shape_is_composed_once_and_each_copy_equals_hydras_own(hydra_loader):
    loader, master = hydra_loader
    counting = CountingLoader(loader)
    configs = TrialConfigs(counting, numeric_keys={"x", "z"})
    trials = [["x=0.5", "y=2", "+z=3"], ["x=1.25", "y=2", "+z=-4.5"], ["x=1e-05", "y=2", "+z=7"]]
    got = [configs.load_sweep_config(master, t) for t in trials]
    assert counting.calls == 1
    for overrides, cfg in zip(trials, got, strict=True):
        expected = loader.load_sweep_config(master, overrides)
        assert as_dict(cfg) == as_dict(expected)
        assert cfg.name == expected.name  # interpolations see the trial's own value
        assert cfg.hydra.job.override_dirname == expected.hydra.job.override_dirname
    assert [c.x for c in got] == [0.5, 1.25, 1e-05]


def test_another_shape_is_composed_again(hydra_loader):
    loader, master = hydra_loader
    counting = CountingLoader(loader)
    configs = TrialConfigs(counting, numeric_keys={"x"})
    configs.load_sweep_config(master, ["x=0.5", "y=2"])
    cfg = configs.load_sweep_config(master, ["x=0.7", "y=3"])  # y is not a searched number
    assert counting.calls == 2
    assert (cfg.x, cfg.y) == (0.7, 3)
    assert len(configs.configs()) == 2


def test_copies_are_independent(hydra_loader):
    loader, master = hydra_loader
    configs = TrialConfigs(loader, numeric_keys={"x"})
    first = configs.load_sweep_config(master, ["x=0.5"])
    first.hydra.job.num = 7  # what a launcher does to the config it gets
    second = configs.load_sweep_config(master, ["x=0.6"])
    assert OmegaConf.is_missing(second.hydra.job, "num") and first.x == 0.5
