"""The sweeper's search space: Hydra sweep syntax -> Optuna distributions -> job overrides, conditions, grids."""

from __future__ import annotations

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lightopt.errors import ConfigError
from lightopt.search.space import build_search_space, parse_param, quote

optuna.logging.set_verbosity(optuna.logging.WARNING)
PARSER = OverridesParser.create()

CONDITIONAL = {
    "optimizer.momentum": {"when": {"optimizer": ["momentum", "nesterov"]}, "space": "choice(0.8, 0.9)"},
    "optimizer.betas": {"when": {"optimizer": ["adam", "adamw"]}, "space": "choice([0.9,0.999],[0.8,0.99])"},
}


def suggest_many(space, n=60, sampler=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((space.suggest(trial), dict(trial.params)))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("line,dist", [
    ("a=choice(sgd,adam)", CategoricalDistribution(["sgd", "adam"])),
    ("a=choice(1,2.5,true)", CategoricalDistribution([1, 2.5, True])),
    # as hydra-optuna-sweeper reads them: a range includes its stop when the steps reach it
    ("a=range(1,3)", IntDistribution(1, 3)),
    ("a=range(1,10,3)", IntDistribution(1, 10, step=3)),
    ("a=range(1,9,3)", IntDistribution(1, 7, step=3)),
    ("a=range(0.5,5.5,step=1)", FloatDistribution(0.5, 5.5, step=1.0)),
    ("a=range(0.1,0.5,0.1)", FloatDistribution(0.1, 0.5, step=0.1)),
    ("a=interval(0.8,0.99)", FloatDistribution(0.8, 0.99)),
    ("a=interval(1,10)", FloatDistribution(1.0, 10.0)),
    ("a=int(interval(1,10))", IntDistribution(1, 10)),
    ("a=tag(log,int(interval(1,100)))", IntDistribution(1, 100, log=True)),
    ("a=tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
    ("a=tag(log,range(1,100))", IntDistribution(1, 100, log=True)),
    # shuffle(...) is a categorical choice, in the declared order (the same distribution on every resume)
    ("a=shuffle(range(1,4))", CategoricalDistribution([1, 2, 3])),
    ("a=shuffle(choice(e,d,c,b,a))", CategoricalDistribution(["e", "d", "c", "b", "a"])),
])
def test_sweep_syntax_gives_the_optuna_distribution(line, dist):
    param = parse_param(line)
    assert param is not None and param.name == "a"
    got = param.distribution
    assert type(got) is type(dist)
    if isinstance(dist, CategoricalDistribution):
        assert got.choices == dist.choices
    else:
        assert (got.low, got.high, got.log) == pytest.approx((dist.low, dist.high, dist.log))
        assert got.step == pytest.approx(dist.step) if dist.step else got.step is None


def test_plain_values_are_fixed_and_the_command_line_wins():
    space = build_search_space(
        params={"optimizer.lr": "interval(0.01, 0.1)", "trainer.max_epochs": 3, "optimizer": "choice(sgd,adam)"},
        arguments=["optimizer.lr=0.05", "model.hidden=choice(16,32)"],
    )
    assert space.names == ["optimizer", "model.hidden"]
    assert space.fixed == ["trainer.max_epochs=3", "optimizer.lr=0.05"]
    assert space.fixed_values["optimizer.lr"] == "0.05"


def test_numbers_searched_by_interval_range_or_choice_of_numbers_are_numeric_keys():
    space = build_search_space(arguments=["optimizer.lr=interval(1e-4,1e-1)", "+model.width=choice(16,32)",
                                          "trainer.max_epochs=range(1,4)", "optimizer=choice(sgd,adam)",
                                          "model.act=choice(1,relu)", "optimizer@opt=choice(1,2)",
                                          "+model.bias=choice(true,false)"])
    # a value of these keys only sets a number; the others may choose a config and change the composition
    assert space.numeric_keys() == {"optimizer.lr", "model.width", "trainer.max_epochs"}


def test_list_valued_choices_are_stored_as_override_text_and_parse_back():
    space = build_search_space(arguments=["optimizer.betas=choice([0.9,0.999],[0.8, 0.99])", "+x.y=choice(a,'b c')"])
    betas = space.params[0]
    assert betas.distribution.choices == ("[0.9,0.999]", "[0.8,0.99]")  # scalars for Optuna
    seen = set()
    for overrides, _ in suggest_many(space, 20):
        for line in overrides:
            override = PARSER.parse_override(line)  # every override is valid Hydra syntax
            seen.add((override.get_key_element(), str(override.value())))
    assert ("optimizer.betas", "[0.9, 0.999]") in seen and ("optimizer.betas", "[0.8, 0.99]") in seen
    assert ("+x.y", "b c") in seen


def test_conditional_params_only_when_their_condition_holds():
    space = build_search_space(params={"optimizer": "choice(sgd, momentum, nesterov, adam, adamw)"},
                               conditional=CONDITIONAL)
    seen = set()
    for overrides, params in suggest_many(space, 80, optuna.samplers.TPESampler(seed=0, n_startup_trials=5)):
        opt = params["optimizer"]
        keys = {o.split("=")[0] for o in overrides}
        assert ("optimizer.momentum" in keys) == (opt in ("momentum", "nesterov")), overrides
        assert ("optimizer.betas" in keys) == (opt in ("adam", "adamw")), overrides
        assert set(params) == keys  # nothing suggested to Optuna that the job does not get
        seen.add(opt)
    assert seen == {"sgd", "momentum", "nesterov", "adam", "adamw"}


def test_conditional_cases_and_fixed_keys_in_conditions():
    cases = {"optimizer.lr": [{"when": {"optimizer": "sgd"}, "space": "interval(0.01, 1.0)"},
                              {"when": {"optimizer": ["adam"]}, "space": "interval(1e-4, 1e-2)"}]}
    space = build_search_space(params={"optimizer": "choice(sgd,adam)"}, conditional=cases)
    for _, params in suggest_many(space, 30):
        lo, hi = (0.01, 1.0) if params["optimizer"] == "sgd" else (1e-4, 1e-2)
        assert lo <= params["optimizer.lr"] <= hi
    # a fixed override in a condition: the case for adam applies to every trial
    fixed = build_search_space(arguments=["optimizer=adam"], conditional=cases)
    assert [o.split("=")[0] for o in suggest_many(fixed, 1)[0][0]] == ["optimizer.lr"]


@pytest.mark.parametrize("conditional,key", [
    ({"optimizer.momentum": {"when": {"optimizer": ["momentum"]}}}, "hydra.sweeper.conditional.optimizer.momentum"),
    ({"optimizer.momentum": {"when": {"nosuch": [1]}, "space": "interval(0,1)"}},
     "hydra.sweeper.conditional.optimizer.momentum.when"),
    ({"optimizer.momentum": {"when": [], "space": "interval(0,1)"}},
     "hydra.sweeper.conditional.optimizer.momentum.when"),
    ({"optimizer.momentum": {"when": {"optimizer": "sgd"}, "space": "0.9"}},
     "hydra.sweeper.conditional.optimizer.momentum.space"),
    ({"optimizer": {"when": {"optimizer": "sgd"}, "space": "choice(a,b)"}}, "hydra.sweeper.conditional.optimizer"),
])
def test_bad_conditional_config_names_the_key(conditional, key):
    with pytest.raises(ConfigError) as err:
        build_search_space(params={"optimizer": "choice(sgd,momentum)"}, conditional=conditional)
    assert err.value.key == key


def test_grid_counts_and_lists_each_distinct_point_once():
    space = build_search_space(params={"optimizer": "choice(sgd, momentum, nesterov, adam, adamw)",
                                       "schedule": "choice(constant,cosine)"}, conditional=CONDITIONAL)
    points = list(space.grid())
    # sgd: 1, momentum/nesterov: 2 each, adam/adamw: 2 each -> 9 per schedule
    assert space.grid_size() == len(points) == 18
    assert len({tuple(sorted(p.items())) for p in points}) == 18
    assert all(("optimizer.momentum" in p) == (p["optimizer"] in ("momentum", "nesterov")) for p in points)
    assert build_search_space(arguments=["a=range(0,1,0.25)", "b=range(1,4)"]).grid_size() == 20


def test_grid_rejects_a_continuous_param_by_name():
    space = build_search_space(arguments=["optimizer=choice(sgd,adam)", "optimizer.lr=tag(log,interval(1e-4,1e-1))"])
    with pytest.raises(ConfigError) as err:
        space.grid_size()
    assert err.value.key == "optimizer.lr" and "choice" in str(err.value) and "range" in str(err.value)


@pytest.mark.parametrize("line", ["a=interval(1,0)", "a=tag(log,interval(0,1))", "a=range(5,1)", "a=choice(x,x)",
                                  "a=tag(log,range(1,10,2))", "a=choice(x"])
def test_bad_sweeps_are_config_errors(line):
    with pytest.raises(ConfigError) as err:
        build_search_space(arguments=[line])
    assert err.value.key == "a"


def test_legacy_search_space_form_and_params_alias():
    space = build_search_space(search_space={"x": {"type": "float", "low": 0.1, "high": 1.0, "log": True},
                                             "n": {"type": "int", "low": 1, "high": 4},
                                             "c": "choice(a,b)"},
                               params={"c": "choice(a,b,c)"})
    dists = {p.name: p.distribution for p in space.params}
    assert dists["x"] == FloatDistribution(0.1, 1.0, log=True)
    assert dists["n"] == IntDistribution(1, 4)
    assert dists["c"].choices == ("a", "b", "c")  # params wins over search_space


def test_fingerprint_depends_on_space_and_fixed_overrides_not_their_order():
    a = build_search_space(arguments=["x=choice(1,2)", "y=interval(0,1)", "z=3"])
    b = build_search_space(arguments=["z=3", "y=interval(0,1)", "x=choice(1,2)"])
    c = build_search_space(arguments=["x=choice(1,2)", "y=interval(0,1)", "z=4"])
    assert a.fingerprint("maximize") == b.fingerprint("maximize") != c.fingerprint("maximize")
    assert a.fingerprint("maximize") != a.fingerprint("minimize")


@pytest.mark.parametrize("value", ["sqlite:////tmp/x y/optuna.db", "it's", "c:\\dir\\", "a\\'b", "x=y,z", ""])
def test_quote_round_trips_through_hydra(value):
    assert PARSER.parse_override(f"k={quote(value)}").value() == value
