"""Search spaces for the lightopt sweeper: Hydra sweep syntax in, Optuna distributions and job overrides out.

Parses ``choice``/``range``/``interval``/``tag(log, ...)`` overrides, hydra-optuna-sweeper's older
``search_space`` form and conditional parameters (searched only when their ``when`` holds) into a
:class:`SearchSpace`, which suggests a trial's overrides and enumerates grids. The syntax itself is described
in the README ("Hyperparameter search") and ``hydra/sweeper/lightopt.yaml``. Optuna's categorical choices must
be scalars, so a choice of lists or dicts is kept as the elements' override text (``"[0.9,0.999]"``).
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightopt.errors import ConfigError

# Optuna's categorical choice types
_SCALARS = (str, int, float, bool)

ALLOWED_SPACE = "choice(...), range(start, stop[, step]), interval(low, high) or tag(log, interval(low, high))"


def quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value that parses back to exactly ``value``."""
    # Hydra unescapes backslashes only before a quote or at the end of a quoted string.
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def value_text(value: Any) -> str:
    """Override text of a plain value (``0.1``, ``sgd``, ``[0.9,0.999]``)."""
    from hydra.core.override_parser.types import Override

    if isinstance(value, float) and value != value:  # NaN has no override literal other than this
        return "nan"
    return Override._get_value_element_as_str(value)


@dataclass(frozen=True)
class Param:
    """One searched parameter.

    Attributes:
        name: the Optuna parameter name, the config key (``optimizer.lr``, or a group such as ``optimizer``).
        key: the override's key element (may carry ``+``/``++`` or ``@package``).
        distribution: what Optuna samples from.
        source: the text the user wrote, e.g. ``tag(log, interval(1e-4, 1e-1))``.
        texts: for categorical parameters, the override text of each choice.
        when: conditions ``((key, (allowed override texts...)), ...)``; all must hold.
    """

    name: str
    key: str
    distribution: Any
    source: str
    texts: tuple[str, ...] | None = None
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def suggest(self, trial: Any) -> Any:
        from optuna.distributions import CategoricalDistribution, IntDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, d.choices)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)

    def text(self, value: Any) -> str:
        """The override text for a value of this parameter."""
        if self.texts is not None:
            for choice, text in zip(self.distribution.choices, self.texts, strict=True):
                if type(choice) is type(value) and choice == value:
                    return text
        return value_text(value)

    def fits(self, value: Any) -> bool:
        """Whether ``value`` (as a config gives it) lies in this parameter's space."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            encoded = self.encode(value)
            return any(type(c) is type(encoded) and c == encoded for c in d.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(d, IntDistribution) and not isinstance(value, int):
            return False
        if not d.low <= value <= d.high:
            return False
        return d.step is None or abs((value - d.low) / d.step - round((value - d.low) / d.step)) < 1e-9

    def encode(self, value: Any) -> Any:
        """``value`` as Optuna holds it: a choice of lists or dicts by its override text."""
        return value if isinstance(value, _SCALARS) or value is None else value_text(value)

    def override(self, value: Any) -> str:
        return f"{self.key}={self.text(value)}"

    def grid_values(self) -> list[Any]:
        """Every value of this parameter, for an exhaustive grid; a continuous one is a :class:`ConfigError`."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution):
            return list(range(d.low, d.high + 1, d.step))
        if d.step is None:
            raise ConfigError(
                self.name, self.source, "choice(...) or range(start, stop, step) with sampler=grid",
                "a continuous interval has no finite grid",
            )
        low, high, step = (decimal.Decimal(str(x)) for x in (d.low, d.high, d.step))
        return [float(low + i * step) for i in range(int((high - low) / step) + 1)]


@dataclass
class SearchSpace:
    """Searched parameters in suggestion order, and the overrides fixed for every trial.

    Attributes:
        params: unconditional parameters first, then conditional ones in declaration order.
        fixed: fixed overrides as written (``trainer.max_epochs=3``), in order.
        fixed_values: override text of each fixed key's value, for conditions.
    """

    params: list[Param] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    fixed_values: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(p.name for p in self.params))

    def numeric_keys(self) -> set[str]:
        """The config keys of the searched numbers (interval, range, a choice of numbers only): their values cannot
        change a composition, since Hydra takes no number as a config group's choice."""
        return {p.key.lstrip("+") for p in self.params if "@" not in p.key and (p.texts is None or all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.distribution.choices))}

    @property
    def conditional(self) -> bool:
        return any(p.when for p in self.params)

    def active(self, param: Param, chosen: Mapping[str, str]) -> bool:
        """Whether ``param``'s condition holds given the override texts chosen so far (and the fixed ones)."""
        for key, allowed in param.when:
            text = chosen.get(key, self.fixed_values.get(key))
            if text is None or text not in allowed:
                return False
        return True

    def suggest(self, trial: Any) -> list[str]:
        """Suggest every active parameter on an Optuna trial; the overrides of the searched values."""
        chosen: dict[str, str] = {}
        overrides = []
        for param in self.params:
            if param.name in chosen or not self.active(param, chosen):
                continue  # a later case of an already decided parameter, or a failed condition
            value = param.suggest(trial)
            chosen[param.name] = param.text(value)
            overrides.append(param.override(value))
        return overrides

    def grid(self) -> Iterable[dict[str, Any]]:
        """Every distinct assignment of the active parameters (ConfigError for a continuous parameter)."""
        values = {id(p): p.grid_values() for p in self.params}

        def walk(i: int, chosen: dict[str, str], point: dict[str, Any]) -> Iterable[dict[str, Any]]:
            if i == len(self.params):
                yield dict(point)
                return
            param = self.params[i]
            if param.name in chosen or not self.active(param, chosen):
                yield from walk(i + 1, chosen, point)
                return
            for value in values[id(param)]:
                yield from walk(i + 1, {**chosen, param.name: param.text(value)}, {**point, param.name: value})

        return walk(0, {}, {})

    def grid_size(self) -> int:
        """The number of distinct grid points, counted without listing parameters no condition depends on."""
        values = {id(p): p.grid_values() for p in self.params}
        referenced = {key for p in self.params for key, _ in p.when}

        def count(i: int, chosen: dict[str, str]) -> int:
            if i == len(self.params):
                return 1
            param = self.params[i]
            if param.name in chosen or not self.active(param, chosen):
                return count(i + 1, chosen)
            if param.name not in referenced:
                return len(values[id(param)]) * count(i + 1, {**chosen, param.name: ""})
            return sum(count(i + 1, {**chosen, param.name: param.text(v)}) for v in values[id(param)])

        return count(0, {})

    def grid_search_space(self) -> dict[str, list[Any]]:
        """Values per parameter for ``optuna.samplers.GridSampler`` (unconditional spaces only)."""
        return {p.name: p.grid_values() for p in self.params}

    def fingerprint(self, *extra: Any) -> str:
        """8 hex digits identifying the space, the fixed overrides and ``extra`` (order-independent)."""
        parts = sorted(f"{p.key}={p.source}|{sorted(p.when)}" for p in self.params)
        blob = json.dumps([parts, sorted(self.fixed), [str(e) for e in extra]], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _parser(config_loader: Any = None) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=config_loader)


def _param_name(override: Any) -> str:
    return override.key_or_group


def _choice_param(override: Any, name: str, source: str) -> Param:
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution

    value = override.value()
    if getattr(value, "shuffle", False):
        # the declared order: the sampler draws its own, and a resumed sweep must see the same distribution
        value.shuffle = False
    elements = list(override.sweep_iterator(transformer=Transformer.identity))
    texts = [Transformer.str(e) for e in elements]
    encoded = [Transformer.encode(e) for e in elements]
    if not elements:
        raise ConfigError(name, source, "at least one choice")
    # Scalars stay typed (a number stays a number in Optuna); lists and dicts become their override text.
    choices = encoded if all(isinstance(e, _SCALARS) for e in encoded) else texts
    if len(set(texts)) != len(texts):
        raise ConfigError(name, source, "distinct choices", "a choice is listed twice")
    return Param(name, override.get_key_element(), CategoricalDistribution(choices), source, tuple(texts))


def _numeric_param(override: Any, name: str, source: str) -> Param:
    """``interval`` and ``range`` as hydra-optuna-sweeper reads them: ``int(interval(a, b))`` is an integer
    distribution (log-scaled under ``tag(log, ...)``), and a range includes its ``stop`` when the steps reach it."""
    from optuna.distributions import FloatDistribution, IntDistribution

    value = override.value()
    log = "log" in value.tags
    try:
        if override.is_interval_sweep():
            if isinstance(value.start, int) and isinstance(value.end, int):  # int(interval(...))
                return Param(name, override.get_key_element(), IntDistribution(value.start, value.end, log=log),
                             source)
            return Param(name, override.get_key_element(),
                         FloatDistribution(float(value.start), float(value.end), log=log), source)
        if value.start > value.stop if value.step > 0 else True:
            raise ConfigError(name, source, "range(start, stop[, step]) with start <= stop and step > 0",
                              "the range is empty")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            if log and value.step != 1:
                raise ConfigError(name, source, "tag(log, range(a, b)) with step 1", "a log range cannot have a step")
            high = value.start + (value.stop - value.start) // value.step * value.step  # the last value reached
            dist = IntDistribution(value.start, high, step=value.step, log=log)
        else:
            if log:
                raise ConfigError(name, source, "tag(log, interval(low, high)) for a log-uniform float")
            start, stop, step = (decimal.Decimal(str(v)) for v in (value.start, value.stop, value.step))
            high = start + int((stop - start) / step) * step
            dist = FloatDistribution(float(start), float(high), step=float(step))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(name, source, ALLOWED_SPACE, str(err)) from None
    return Param(name, override.get_key_element(), dist, source)


def parse_param(line: str, config_loader: Any = None, when: tuple = ()) -> Param | None:
    """Parse ``key=<sweep>``; ``None`` when the value is not a sweep (a fixed override)."""
    try:
        override = _parser(config_loader).parse_override(line)
    except Exception as err:  # noqa: BLE001 - Hydra's grammar errors carry the explanation
        key, _, value = line.partition("=")
        raise ConfigError(key, value, ALLOWED_SPACE + " or a plain value", str(err).splitlines()[0]) from None
    if not override.is_sweep_override():
        return None
    name = _param_name(override)
    source = line.partition("=")[2]
    if override.is_interval_sweep() or override.is_range_sweep() and not override.value().shuffle:
        param = _numeric_param(override, name, source)
    else:  # choice(...), a,b,c, glob(...), sort(...), shuffle(...): categorical, as in hydra-optuna-sweeper
        param = _choice_param(override, name, source)
    return Param(param.name, param.key, param.distribution, param.source, param.texts, when)


def _legacy_param(name: str, spec: Mapping[str, Any]) -> Param:
    """hydra-optuna-sweeper's older ``search_space`` form: ``{type: float, low: .., high: .., log: .., step: ..}``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type")
    source = json.dumps(dict(spec), sort_keys=True, default=str)
    try:
        if kind == "categorical":
            choices = list(spec["choices"])
            texts = tuple(value_text(c) for c in choices)
            scalar = all(isinstance(c, _SCALARS) for c in choices)
            return Param(name, name, CategoricalDistribution(choices if scalar else list(texts)), source, texts)
        if kind == "int":
            dist = IntDistribution(int(spec["low"]), int(spec["high"]), step=int(spec.get("step") or 1),
                                   log=bool(spec.get("log", False)))
            return Param(name, name, dist, source)
        if kind == "float":
            return Param(name, name, FloatDistribution(float(spec["low"]), float(spec["high"]), step=spec.get("step"),
                                                       log=bool(spec.get("log", False))), source)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"hydra.sweeper.search_space.{name}", dict(spec), "{type, low, high[, log, step]} or "
                          "{type: categorical, choices}", str(err)) from None
    raise ConfigError(f"hydra.sweeper.search_space.{name}.type", kind, "categorical | int | float")


def _as_line(key: str, value: Any) -> str:
    """A ``params`` entry as an override line (strings are already override syntax)."""
    return f"{key}={value if isinstance(value, str) else value_text(value)}"


def _conditions(key: str, when: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"hydra.sweeper.conditional.{key}.when", when,
                          "a mapping {key: value or [values]}, e.g. {optimizer: [momentum, nesterov]}")
    out = []
    for ref, allowed in when.items():
        values = list(allowed) if isinstance(allowed, Sequence) and not isinstance(allowed, str) else [allowed]
        out.append((str(ref), tuple(value_text(v) for v in values)))
    return tuple(out)


def _cases(key: str, spec: Any) -> list[Mapping[str, Any]]:
    allowed = "{when: {key: values}, space: <sweep>} or a list of them"
    cases = spec if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    for i, case in enumerate(cases):
        where = f"hydra.sweeper.conditional.{key}" + (f"[{i}]" if len(cases) > 1 else "")
        if not isinstance(case, Mapping) or set(case) != {"when", "space"}:
            raise ConfigError(where, spec, allowed)
    return cases


def build_search_space(
    params: Mapping[str, Any] | None = None,
    arguments: Sequence[str] = (),
    conditional: Mapping[str, Any] | None = None,
    search_space: Mapping[str, Any] | None = None,
    config_loader: Any = None,
) -> SearchSpace:
    """Collect the search space from the sweeper config and the command line.

    Later definitions of a key win: ``search_space`` (older name), then ``params``, then the command line;
    a fixed value on the command line takes a key out of the search.
    """
    entries: dict[str, Param | str] = {}  # name -> searched Param, or the fixed override line

    def put(name: str, entry: Param | str) -> None:
        entries.pop(name, None)  # a redefinition moves to the end, in the order the user gave
        entries[name] = entry

    parser = _parser(config_loader)
    for key, value in (search_space or {}).items():
        if isinstance(value, Mapping):  # the older {type, low, high} form
            put(str(key), _legacy_param(str(key), value))
    lines = [_as_line(str(k), v) for k, v in (search_space or {}).items() if not isinstance(v, Mapping)]
    lines += [_as_line(str(k), v) for k, v in (params or {}).items()]
    for line in [*lines, *arguments]:
        param = parse_param(line, config_loader)
        put(param.name if param else _param_name(parser.parse_override(line)), param or line)

    space = SearchSpace()
    space.params = [e for e in entries.values() if isinstance(e, Param)]
    space.fixed = [e for e in entries.values() if isinstance(e, str)]
    for line in space.fixed:
        override = parser.parse_override(line)
        if override.value_type is not None:
            space.fixed_values[_param_name(override)] = override.get_value_element_as_str()
    by_name = {p.name: p for p in space.params}

    declared = set(by_name)
    for key, spec in (conditional or {}).items():
        key = str(key)
        if key in space.fixed_values:
            continue  # fixed on the command line: that value applies to every trial
        if key in by_name:
            raise ConfigError(f"hydra.sweeper.conditional.{key}", spec,
                              "a key not also searched unconditionally (in params or on the command line)",
                              "it is searched both ways")
        for case in _cases(key, spec):
            when = _conditions(key, case["when"])
            for ref, _ in when:
                if ref not in declared and ref not in space.fixed_values:
                    raise ConfigError(f"hydra.sweeper.conditional.{key}.when", ref,
                                      "a parameter searched before it (in params or earlier in conditional) "
                                      "or a fixed override", "it is neither")
            space_text = case["space"]
            line = _as_line(key, space_text)
            param = parse_param(line, config_loader, when)
            if param is None:
                raise ConfigError(f"hydra.sweeper.conditional.{key}.space", space_text, ALLOWED_SPACE,
                                  "a conditional parameter must be searched")
            space.params.append(param)
        declared.add(key)
    return space
