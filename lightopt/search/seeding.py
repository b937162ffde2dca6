"""What a new study starts from: ``hydra.sweeper.enqueue`` (parameter sets tried first) and
``hydra.sweeper.warm_start`` (the finished trials of an earlier study, copied where they fit this space).

Both act only on a study this sweep has not run trials in yet, so that resuming a sweep never repeats them.
Opening the study and running trials are :mod:`lightopt.search.sweeper`'s and :mod:`lightopt.search.study_loop`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from lightopt.errors import ConfigError
from lightopt.search.space import SearchSpace
from lightopt.storage import hide_password, sqlite_path, with_driver

#: user attribute of a trial copied from an earlier study (its origin): it does not count toward n_trials
WARM_START_ATTR = "warm_start_from"


def ran_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials this study ran or will run itself (not copied by a warm start)."""
    return [t for t in trials if WARM_START_ATTR not in t.user_attrs]


def check_point(space: SearchSpace, point: Any, where: str) -> dict[str, Any]:
    """A parameter set of ``enqueue``: keys among the searched parameters, each value inside its range."""
    allowed = f"a mapping of searched parameters ({', '.join(space.names) or 'none'}) to values in their ranges"
    if not isinstance(point, Mapping) or not point:
        raise ConfigError(where, point, allowed)
    by_name = {p.name: p for p in space.params}
    for key, value in point.items():
        if key not in by_name:
            raise ConfigError(f"{where}.{key}", value, allowed, f"{key} is not searched")
        if not by_name[key].fits(value):
            raise ConfigError(f"{where}.{key}", value, f"a value of {by_name[key].source}", "outside the space")
    return {k: by_name[k].encode(v) for k, v in point.items()}


def enqueue(study: optuna.Study, space: SearchSpace, points: Any) -> int:
    """Put ``hydra.sweeper.enqueue``'s parameter sets first in the queue of a study without trials of its own."""
    if points is None:
        return 0
    if not isinstance(points, Sequence) or isinstance(points, str):
        raise ConfigError("hydra.sweeper.enqueue", points, "a list of {parameter: value} mappings, or null")
    checked = [check_point(space, p, f"hydra.sweeper.enqueue[{i}]") for i, p in enumerate(points)]
    if ran_trials(study.get_trials(deepcopy=False)):
        return 0  # a resumed sweep: enqueued when it started
    for params in checked:
        study.enqueue_trial(params, skip_if_exists=True)
    return len(checked)


def enqueued_line(count: int) -> str | None:
    return f"{count} enqueued parameter set{'s' if count != 1 else ''} first" if count else None


def warm_start(study: optuna.Study, space: SearchSpace, source: Any, own_storage: str) -> str | None:
    """Copy the finished trials of ``hydra.sweeper.warm_start``'s study that fit ``space`` into a new ``study``;
    a line saying what was copied, or None without a warm start."""
    if source is None:
        return None
    if not isinstance(source, Mapping) or not set(source) <= {"storage", "study_name"}:
        raise ConfigError("hydra.sweeper.warm_start", source, "{storage: URL (null = this sweep's), study_name: "
                          "name (null = the storage's only study)}, or null")
    url = with_driver(str(source.get("storage") or own_storage))
    old = _load(url, source.get("study_name"))
    if old.study_name == study.study_name and url == own_storage:
        raise ConfigError("hydra.sweeper.warm_start.study_name", old.study_name, "another study than this sweep's")
    if [d.name for d in old.directions] != [d.name for d in study.directions]:
        raise ConfigError("hydra.sweeper.warm_start", dict(source), f"a study with this sweep's directions "
                          f"{[d.name.lower() for d in study.directions]}", f"study {old.study_name} has "
                          f"{[d.name.lower() for d in old.directions]}")
    origin = f"{old.study_name} in {hide_password(url)}"
    trials = study.get_trials(deepcopy=False)
    if trials:  # seeded when this study started
        copied = sum(WARM_START_ATTR in t.user_attrs for t in trials)
        return f"warm start: {copied} trials from {origin} (copied when the study started)"
    finished = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fitting = [t for t in finished if _fits(space, t.params)]
    by_name = {p.name: p for p in space.params}
    for t in fitting:
        study.add_trial(optuna.trial.create_trial(
            params=dict(t.params), distributions={k: by_name[k].distribution for k in t.params},
            values=list(t.values), user_attrs={**t.user_attrs, WARM_START_ATTR: f"{origin} #{t.number}"}))
    skipped = len(finished) - len(fitting)
    return (f"warm start: {len(fitting)} of {len(finished)} completed trials copied from {origin}"
            + (f" ({skipped} did not fit this search space)" if skipped else ""))


def _fits(space: SearchSpace, params: Mapping[str, Any]) -> bool:
    by_name = {p.name: p for p in space.params}
    if not set(params) <= set(by_name) or not {p.name for p in space.params if not p.when} <= set(params):
        return False
    return all(by_name[k].fits(v) for k, v in params.items())


def _load(url: str, name: Any) -> optuna.Study:
    allowed = "the storage URL of an earlier sweep, e.g. sqlite:///multirun/<date>/<time>/optuna.db"
    path = sqlite_path(url)
    if path is not None and not path.is_file():  # opening it would create an empty database
        raise ConfigError("hydra.sweeper.warm_start.storage", hide_password(url), allowed, "no such file")
    try:
        names = [s.study_name for s in optuna.study.get_all_study_summaries(url)]
    except Exception as err:  # noqa: BLE001 - a wrong URL, a missing database, a missing driver
        raise ConfigError("hydra.sweeper.warm_start.storage", hide_password(url), allowed,
                          str(err).splitlines()[0]) from None
    if name is None:
        if len(names) != 1:
            raise ConfigError("hydra.sweeper.warm_start.study_name", None, f"one of {names}",
                              f"the storage holds {len(names)} studies")
        name = names[0]
    if name not in names:
        raise ConfigError("hydra.sweeper.warm_start.study_name", name, f"one of {names}")
    return optuna.load_study(study_name=name, storage=url)
