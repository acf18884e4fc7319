"""Which series become modelled signals, and which signals are derived: profiles of rules.

A profile is a YAML mapping::

    name: node_exporter
    match: '{__name__=~"node_.+"}'   # the series it owns (absent: every series left)
    signals:                         # derived signals, like Prometheus recording rules
      - record: memory_used_fraction
        expr: 1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes
        capacity: 1                  # a used fraction of this capacity: exhaustion models
    relabel:                         # metric_relabel_configs over the series it owns:
      - source_labels: [__name__]    # which of them are signals as they are
        regex: node_pressure_.+
        action: keep

Every series belongs to the first profile whose ``match`` selects it; a profile is on for an
entity while one of the entity's series belongs to it. An active profile's ``signals`` are
evaluated over all of the entity's converted series (counters as per-second rates; see
:mod:`models.signals.expressions` for the language), and its ``relabel`` steps run over the
series it owns: those that survive are signals too, named by their labels after relabelling
(labels starting with ``__`` left out). Relabelling sees the series' type as ``__type__``
(``counter``, ``gauge``, ``histogram``, ``summary``...) and can mark a capacity by setting
``__capacity__``. With no ``relabel``, a profile keeps every series it owns, as Prometheus
keeps every series when ``metric_relabel_configs`` is empty.

Shipped profiles (``models/signals/profiles/*.yaml``), in this order: ``node_exporter``,
``cadvisor``, ``red``, ``simulator``, and ``generic``, which owns whatever is left. A rules
file of one's own holds ``profiles:`` (a list; they come first, so they win) and optionally
``shipped:`` (which shipped profiles follow them; all by default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from models.base import FloatArray
from models.rules_file import read_rules_file
from models.signals.conversion import Scrape
from models.signals.expressions import (
    EvaluationError,
    Node,
    RuleError,
    Selector,
    SeriesIndex,
    is_scalar,
    parse,
    selectors,
)
from models.signals.kinds import MetricKind
from models.signals.relabel import RelabelConfig, RelabelError, relabel
from models.signals.series import NAME, series_name

SHIPPED = ("node_exporter", "cadvisor", "red", "simulator", "generic")
CAPACITY_LABEL = "__capacity__"
TYPE_LABEL = "__type__"
PASSTHROUGH = "relabel"  # the rule name of signals a profile's relabelling kept
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROFILE_FIELDS = {"name", "description", "match", "signals", "relabel"}
_SIGNAL_FIELDS = {"record", "expr", "capacity"}
_CACHE_LIMIT = 200_000


class RulesError(ValueError):
    """A rules file or profile that cannot be used; the message names the place and why."""


@dataclass(frozen=True)
class Record:
    """A derived signal: its name, its expression, and its capacity (NaN when none)."""

    record: str
    expr: Node
    capacity: float = math.nan


@dataclass(frozen=True)
class Profile:
    """A profile of rules (see the module docstring)."""

    name: str
    match: Selector | None = None
    records: tuple[Record, ...] = ()
    relabel: tuple[RelabelConfig, ...] = ()
    description: str = ""

    def owns(self, labels: Mapping[str, str]) -> bool:
        return self.match is None or all(m.matches(labels) for m in self.match.matchers)


@dataclass
class Signals:
    """The signals of one entity at one scrape, parallel arrays, ready for the windows.

    ``capacities`` is NaN where a signal is not a used fraction of a capacity; ``origins``
    says which profile and rule made each signal (for the dropped-signal counts);
    ``errors`` are ``(profile, rule, why)`` for rules that could not be evaluated.
    """

    t_ms: int
    names: list[str] = field(default_factory=list)
    values: FloatArray = field(default_factory=lambda: np.zeros(0))
    capacities: FloatArray = field(default_factory=lambda: np.zeros(0))
    origins: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Passthrough:
    """An entity's signals when each is one of its series as it is (a gauge, or a counter's
    rate) and no derived signal of its profiles reads any of its series: which rows become
    signals, under which names and capacities, in the order :meth:`SignalRules.evaluate`
    gives them. Made once per set of series (:meth:`SignalRules.passthrough`), it makes a
    scrape's signals with a few array operations and no object per sample."""

    rows: npt.NDArray[np.int64]
    names: list[str]
    capacities: FloatArray
    origins: list[tuple[str, str]]

    def signals(self, t_ms: int, values: FloatArray, fresh: npt.NDArray[np.bool_]) -> Signals:
        """The signals of a scrape: the fresh ones of the series' ``values`` (row order)."""
        taken = fresh[self.rows]
        if taken.all():
            return Signals(
                t_ms, list(self.names), values[self.rows], self.capacities, list(self.origins)
            )
        at = np.flatnonzero(taken)
        return Signals(
            t_ms,
            [self.names[i] for i in at],
            values[self.rows[at]],
            self.capacities[at],
            [self.origins[i] for i in at],
        )


@dataclass(frozen=True)
class _Route:
    profile: int
    signal: str | None  # the pass-through signal's name, or None when relabelling drops it
    capacity: float


def _fail(where: str, reason: str) -> RulesError:
    return RulesError(f"{where}: {reason}")


def _capacity(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(where, f"capacity must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise _fail(where, f"capacity must be finite and above 0, got {raw!r}")
    return value


def _fields(raw: Any, fields: set[str], what: str, where: str) -> Mapping[str, Any]:
    """``raw`` when it is a mapping of known fields; else the error naming the place."""
    if not isinstance(raw, Mapping):
        raise _fail(where, f"{what} is a mapping of {sorted(fields)}, got {raw!r:.80}")
    unknown = set(raw) - fields
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(unknown)}; use {sorted(fields)}")
    return raw


def _record(raw: Any, where: str) -> Record:
    raw = _fields(raw, _SIGNAL_FIELDS, "a signal", where)
    name = raw.get("record")
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise _fail(where, f"record must be a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), got {name!r}")
    where = f"{where} ({name})"
    try:
        expr = parse(str(raw.get("expr", "")))
    except RuleError as error:
        raise _fail(where, f"expr: {error}") from None
    if is_scalar(expr):
        raise _fail(where, "expr is a number; a signal needs series to read")
    capacity = _capacity(raw["capacity"], where) if "capacity" in raw else math.nan
    return Record(name, expr, capacity)


def _relabel_steps(raw: Any, where: str) -> tuple[RelabelConfig, ...]:
    if not isinstance(raw, list):
        raise _fail(where, f"relabel must be a list of relabel configs, got {raw!r}")
    steps = []
    for i, step in enumerate(raw):
        if not isinstance(step, Mapping):
            raise _fail(f"{where}[{i}]", f"a relabel config is a mapping, got {step!r}")
        try:
            config = RelabelConfig.from_dict(step)
        except RelabelError as error:
            raise _fail(f"{where}[{i}]", str(error)) from None
        fixed = config.target_label == CAPACITY_LABEL and "$" not in config.replacement
        if fixed:
            _capacity(config.replacement, f"{where}[{i}] replacement")
        steps.append(config)
    return tuple(steps)


def parse_profile(raw: Any, where: str) -> Profile:
    """A profile from its YAML mapping; raises :class:`RulesError` naming the place."""
    raw = _fields(raw, _PROFILE_FIELDS, "a profile", where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, "a profile needs a name")
    where = f"{where} ({name})"
    match = None
    if raw.get("match") is not None:
        try:
            node = parse(str(raw["match"]))
        except RuleError as error:
            raise _fail(where, f"match: {error}") from None
        if not isinstance(node, Selector):
            raise _fail(where, "match must be a selector such as '{__name__=~\"node_.+\"}'")
        match = node
    signals = raw.get("signals") or []
    if not isinstance(signals, list):
        raise _fail(where, "signals must be a list")
    records = tuple(_record(s, f"{where} signals[{i}]") for i, s in enumerate(signals))
    steps = _relabel_steps(raw.get("relabel") or [], f"{where} relabel")
    return Profile(name, match, records, steps, str(raw.get("description", "")))


@cache
def shipped_profile(name: str) -> Profile:
    """A shipped profile, read from the package's ``profiles/<name>.yaml``."""
    text = resources.files("models.signals").joinpath(f"profiles/{name}.yaml").read_text()
    return parse_profile(yaml.safe_load(text), f"shipped profile {name}.yaml")


class SignalRules:
    """Profiles in force, shared by every entity of a worker; stateless but for a cache of
    each series' route (which profile owns it, and its signal name after relabelling).

    Examples
    --------
    >>> rules = SignalRules.shipped()
    >>> [p.name for p in rules.profiles]
    ['node_exporter', 'cadvisor', 'red', 'simulator', 'generic']
    """

    def __init__(self, profiles: Sequence[Profile]) -> None:
        names = [p.name for p in profiles]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RulesError(f"profile names must be unique; repeated: {duplicates}")
        self.profiles = tuple(profiles)
        self._routes: dict[tuple[str, MetricKind], _Route] = {}

    @classmethod
    @cache
    def shipped(cls) -> SignalRules:
        """The shipped profiles alone."""
        return cls([shipped_profile(name) for name in SHIPPED])

    @classmethod
    def load(cls, path: str | Path | None) -> SignalRules:
        """The rules of the file at ``path`` followed by the shipped profiles it keeps; the
        shipped profiles alone when ``path`` is empty. Raises :class:`RulesError`."""
        if not path:
            return cls.shipped()
        mine, shipped = read_rules_file(path, "signal", "profiles", SHIPPED, RulesError)
        profiles = [parse_profile(p, f"{path} profiles[{i}]") for i, p in enumerate(mine)]
        return cls(profiles + [shipped_profile(name) for name in shipped])

    def _route(self, key: str, labels: Mapping[str, str], kind: MetricKind) -> _Route | None:
        route = self._routes.get((key, kind))
        if route is not None:
            return route
        owner = next((i for i, p in enumerate(self.profiles) if p.owns(labels)), None)
        if owner is None:
            return None
        kept = relabel({**labels, TYPE_LABEL: kind.value.lower()}, self.profiles[owner].relabel)
        signal, capacity = None, math.nan
        if kept is not None:
            signal = series_name(kept)
            try:
                capacity = float(kept.get(CAPACITY_LABEL, "nan"))
            except ValueError:
                capacity = math.nan
        if len(self._routes) >= _CACHE_LIMIT:
            self._routes.clear()
        route = self._routes[(key, kind)] = _Route(owner, signal, capacity)
        return route

    def passthrough(
        self, keys: Sequence[str], labels: Sequence[Mapping[str, str]], kinds: Sequence[MetricKind]
    ) -> Passthrough | None:
        """How :meth:`evaluate` treats an entity with these series (parallel lists, none of
        them a histogram's or summary's part), when every signal it can make is one series
        as it is; None when a derived signal reads any of them, or two series make one
        signal name (then which one is kept depends on which is fresh)."""
        routes = [
            self._route(key, of, kind) for key, of, kind in zip(keys, labels, kinds, strict=True)
        ]
        for p in {route.profile for route in routes if route is not None}:
            for rule in self.profiles[p].records:
                if any(s.selects(x) for s in selectors(rule.expr) for x in labels):
                    return None
        order = sorted(
            (route.profile, row)
            for row, route in enumerate(routes)
            if route is not None and route.signal is not None
        )
        chosen = [routes[row] for _, row in order]
        names = [route.signal for route in chosen if route is not None and route.signal]
        if len(set(names)) != len(names):
            return None
        return Passthrough(
            np.array([row for _, row in order], dtype=np.int64),
            names,
            np.array([route.capacity for route in chosen if route is not None], dtype=np.float64),
            [(self.profiles[p].name, PASSTHROUGH) for p, _ in order],
        )

    def evaluate(self, t_ms: int, scrape: Scrape) -> Signals:
        """The signals of one entity's scrape: each active profile's derived signals, then
        the series its relabelling keeps; only those with a new input, finite, and each
        name once (the first profile to make it wins)."""
        routes = [
            self._route(key, sample.labels, kind)
            for key, sample, kind in zip(scrape.keys, scrape.samples, scrape.kinds, strict=True)
        ]
        owned: dict[int, list[int]] = {}
        for i, route in enumerate(routes):
            if route is not None:
                owned.setdefault(route.profile, []).append(i)
        out = Signals(t_ms)
        names, values, capacities = [], [], []
        seen: set[str] = set()

        def emit(name: str, value: float, capacity: float, origin: tuple[str, str]) -> None:
            if name not in seen and math.isfinite(value):
                seen.add(name)
                names.append(name)
                values.append(value)
                capacities.append(capacity)
                out.origins.append(origin)

        index = (
            SeriesIndex(scrape.samples) if any(self.profiles[p].records for p in owned) else None
        )
        for p in sorted(owned):
            profile = self.profiles[p]
            for rule in profile.records:
                assert index is not None
                try:
                    vector = rule.expr.evaluate(index)
                except EvaluationError as error:
                    out.errors.append((profile.name, rule.record, str(error)))
                    continue
                assert isinstance(vector, list)
                for s in vector:
                    if s.fresh:
                        name = series_name({**s.labels, NAME: rule.record})
                        emit(name, s.value, rule.capacity, (profile.name, rule.record))
            for i in owned[p]:
                route, sample = routes[i], scrape.samples[i]
                if route is not None and route.signal is not None and sample.fresh:
                    emit(route.signal, sample.value, route.capacity, (profile.name, PASSTHROUGH))
        out.names = names
        out.values = np.array(values, dtype=np.float64)
        out.capacities = np.array(capacities, dtype=np.float64)
        return out
