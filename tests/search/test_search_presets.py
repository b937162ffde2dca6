"""Search presets ``conf/search/*.yaml``: valid sweep syntax, and every key they search exists in the config.

Each preset's search spaces are parsed with Hydra's override grammar (the syntax the sweeper reads), and
every value they can take is applied to the composed training config, which fails for a key that does
not exist. The presets are also composed with the ``hydra`` node, as the ``lightopt`` sweeper reads them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override
from omegaconf import DictConfig, OmegaConf

from lightopt.run.training import check_config
from tests.helpers import CONF, compose_cfg

PRESETS = {
    "lr_wd": {"optimizer.lr", "regularization.weight_decay"},
    "optimizer_schedule": {"optimizer", "schedule"},
    "conditional": {"optimizer", "optimizer.lr"},
    "batch_size": {"data.batch_size", "lr_scaling.rule"},
}
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}
PARSER = OverridesParser.create()
NESTING = ("hydra:", "sweeper:", "defaults:")  # keys that only hold other keys


def preset(name: str) -> DictConfig:
    return OmegaConf.load(CONF / "search" / f"{name}.yaml")


def parse(key: str, space: str) -> Override:
    override = PARSER.parse_override(f"{key}={space}")
    assert override.is_sweep_override(), f"{key}: {space} is not a search space"
    return override


def group_overrides(cfg: DictConfig) -> list[str]:
    """The preset's ``override /group: choice`` defaults as command-line overrides (``hydra/`` ones left out)."""
    out = []
    for entry in cfg.get("defaults", []):
        for key, choice in entry.items():
            group = key.removeprefix("override ").strip().lstrip("/")
            if not group.startswith("hydra/"):
                out.append(f"{group}={choice}")
    return out


def samples(override: Override) -> list[str]:
    """Overrides for a few values of a search space: every choice, or an interval's two ends."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        values = [repr(float(value.start)), repr(float(value.end))]
    else:
        values = list(override.sweep_string_iterator())
    return [f"{override.key_or_group}={v}" for v in values]


def test_every_preset_file_is_tested():
    assert {p.stem for p in (CONF / "search").glob("*.yaml")} == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_global_and_commented(name):
    lines = (CONF / "search" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    for above, line in zip(lines, lines[1:], strict=False):
        if not line.strip() or line.lstrip().startswith(("#", "-")) or line.strip() in NESTING:
            continue  # blank, comment, defaults entry (commented inline), plain nesting
        commented = "#" in line or above.lstrip().startswith("#")
        assert commented, f"uncommented key in search/{name}.yaml: {line.strip()}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_search_spaces_parse_and_every_value_applies(name):
    cfg = preset(name)
    sweeper = cfg.hydra.sweeper
    assert set(sweeper.params) == PRESETS[name]
    assert isinstance(sweeper.n_trials, int) and sweeper.n_trials > 0
    base = group_overrides(cfg)
    spaces = [parse(k, v) for k, v in sweeper.params.items()]
    for override in spaces:
        if override.key_or_group in GROUPS:
            choices = override.value()
            assert isinstance(choices, ChoiceSweep), f"{override.key_or_group}: a group is searched by choice()"
            for choice in choices.list:
                assert (CONF / override.key_or_group / f"{choice}.yaml").exists(), choice
    # every value of every space, one at a time, lands on a key of the composed training config
    for sample in itertools.chain.from_iterable(samples(o) for o in spaces):
        check_config(compose_cfg(*base, sample))


def test_optimizer_schedule_is_the_full_5x5_grid():
    cfg = preset("optimizer_schedule")
    spaces = {k: parse(k, v).value() for k, v in cfg.hydra.sweeper.params.items()}
    assert spaces["optimizer"].list == ["sgd", "momentum", "rmsprop", "adam", "adamw"]
    assert spaces["schedule"].list == ["constant", "exponential", "linear", "step", "cosine"]
    assert cfg.hydra.sweeper.n_trials == 25
    assert cfg.defaults[0] == {"override /hydra/sweeper/sampler": "grid"}
    for optimizer, schedule in itertools.product(spaces["optimizer"].list, spaces["schedule"].list):
        check_config(compose_cfg(f"optimizer={optimizer}", f"schedule={schedule}"))


def test_lr_wd_searches_both_on_a_log_scale_with_weight_decay_on():
    cfg = preset("lr_wd")
    for key, space in cfg.hydra.sweeper.params.items():
        value = parse(key, space).value()
        assert isinstance(value, IntervalSweep) and "log" in value.tags, key
    assert "regularization=l2" in group_overrides(cfg)
    assert compose_cfg(*group_overrides(cfg)).regularization.weight_decay > 0


def test_conditional_spaces_apply_only_where_the_key_exists():
    cfg = preset("conditional")
    optimizers = parse("optimizer", cfg.hydra.sweeper.params.optimizer).value().list
    conditional = cfg.hydra.sweeper.conditional
    assert set(conditional) == {"optimizer.momentum", "optimizer.betas"}
    assert list(conditional["optimizer.momentum"].when.optimizer) == ["momentum", "nesterov"]
    assert list(conditional["optimizer.betas"].when.optimizer) == ["adam", "adamw"]
    for key, rule in conditional.items():
        assert set(rule) == {"when", "space"}
        override = parse(key, rule.space)
        (group, chosen), = rule.when.items()
        assert set(chosen) <= set(optimizers)
        for choice in optimizers:
            composed = compose_cfg(f"{group}={choice}")
            # the key exists exactly for the choices the condition names: elsewhere it would fail to apply
            assert (OmegaConf.select(composed, key) is not None) == (choice in chosen), (key, choice)
        for choice, sample in itertools.product(chosen, samples(override)):
            check_config(compose_cfg(f"{group}={choice}", sample))


def test_batch_size_space():
    params = preset("batch_size").hydra.sweeper.params
    assert parse("data.batch_size", params["data.batch_size"]).value().list == [16, 32, 64, 128, 256]
    assert parse("lr_scaling.rule", params["lr_scaling.rule"]).value().list == ["none", "linear", "sqrt"]


# --- the presets as the sweeper sees them: `python train.py -m search=NAME --cfg hydra` ---

def _hydra_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_composes_into_the_sweeper_config(name):
    cfg = _hydra_cfg(f"search={name}")
    sweeper = cfg.hydra.sweeper
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "lightopt"
    assert set(sweeper.params) == PRESETS[name]
    assert sweeper.n_trials == preset(name).hydra.sweeper.n_trials
    grid = name in ("optimizer_schedule", "batch_size")
    assert cfg.hydra.runtime.choices["hydra/sweeper/sampler"] == ("grid" if grid else "tpe")
    for key in sweeper.params:  # non-group keys exist in the composed run config
        if key not in GROUPS:
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    if name == "lr_wd":
        assert cfg.regularization.weight_decay > 0
    if name == "conditional":
        assert set(sweeper.conditional) == {"optimizer.momentum", "optimizer.betas"}


def test_presets_dir_is_a_config_group():
    assert Path(CONF / "search").is_dir() and "search" in GROUPS
    assert compose_cfg().get("search") is None  # search: null adds nothing to a plain run
