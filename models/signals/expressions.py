"""The expressions of derived signals: a subset of PromQL, evaluated on one entity's series
at one scrape, as an instant query is.

Supported, with PromQL's meaning:

* selectors ``name{label="v", label!="v", label=~"re", label!~"re"}`` (regexes fully
  anchored, as Prometheus anchors them), and ``{__name__=~"re"}``;
* numbers, parentheses, unary minus;
* ``* /``, then ``+ -``, then comparisons ``== != > < >= <=`` (which filter, as PromQL's do
  without ``bool``), then ``or``; between vectors one-to-one matching on all labels but the
  name, or ``on(...)`` / ``ignoring(...)``;
* aggregations ``sum avg min max count``, with ``by (...)`` or ``without (...)`` before or
  after the argument;
* functions ``histogram_quantile(φ, v)``, ``clamp_min(v, s)``, ``clamp_max(v, s)``,
  ``abs(v)`` and ``vector(s)``.

There are no range selectors and no ``rate()``: the conversion stage has already turned every
counter into its per-second rate (between consecutive scrapes, PromQL's ``irate``), so
``node_cpu_seconds_total`` here *is* the rate. Each sample carries whether any of the inputs
it was computed from is new at this scrape (:attr:`Sample.fresh`): a derived signal gets a
value only when something it reads has moved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from models.signals.series import NAME


@dataclass(slots=True)
class Sample:
    """One series' value at the evaluated scrape; ``labels`` is never mutated."""

    labels: Mapping[str, str]
    value: float
    fresh: bool


Vector: TypeAlias = list[Sample]
Value: TypeAlias = float | Vector


class RuleError(ValueError):
    """An expression that cannot be parsed; the message names the place and the reason."""


class EvaluationError(ValueError):
    """An expression that cannot be evaluated on this data (PromQL's many-to-many error)."""


class SeriesIndex:
    """An entity's series at one scrape, indexed by metric name (on first use) for the
    selectors."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples
        self._by_name: dict[str, list[Sample]] | None = None

    def named(self, name: str) -> list[Sample]:
        """The series called ``name``."""
        if self._by_name is None:
            self._by_name = {}
            for sample in self.samples:
                self._by_name.setdefault(sample.labels[NAME], []).append(sample)
        return self._by_name.get(name, [])


# -- histogram quantiles ---------------------------------------------------------------------


def bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile`` for one histogram: linear interpolation within the
    bucket that holds the rank; NaN without a ``+Inf`` bucket or without observations.

    ``bounds`` are the buckets' ``le`` values and ``counts`` their cumulative counts (or
    rates, or increases: the quantile only depends on their proportions), in any order.

    >>> bucket_quantile(0.5, [1.0, 2.0, math.inf], [10.0, 30.0, 40.0])
    1.5
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in zip(bounds, counts, strict=True):
        merged[bound] = merged.get(bound, 0.0) + count
    upper = sorted(merged)
    if len(upper) < 2 or not math.isinf(upper[-1]) or upper[-1] < 0:
        return math.nan
    # Buckets are cumulative; floating error or a reset of one bucket can break that, and
    # Prometheus then takes the running maximum.
    cumulative = np.maximum.accumulate(np.array([merged[b] for b in upper]))
    observations = float(cumulative[-1])
    if not observations > 0:
        return math.nan
    rank = q * observations
    b = int(np.searchsorted(cumulative[:-1], rank, side="left"))
    if b == len(upper) - 1:
        return upper[-2]
    if b == 0 and upper[0] <= 0:
        return upper[0]
    start, end, count = 0.0, upper[b], float(cumulative[b])
    if b > 0:
        start = upper[b - 1]
        count -= float(cumulative[b - 1])
        rank -= float(cumulative[b - 1])
    return start + (end - start) * (rank / count)


# -- the syntax tree -------------------------------------------------------------------------


def _without_name(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != NAME}


@dataclass(frozen=True)
class Number:
    value: float

    def evaluate(self, index: SeriesIndex) -> Value:
        return self.value


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            object.__setattr__(self, "pattern", re.compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.pattern is None:
            return (value == self.value) == (self.op == "=")
        return (self.pattern.fullmatch(value) is not None) == (self.op == "=~")


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def evaluate(self, index: SeriesIndex) -> Value:
        name = next((m.value for m in self.matchers if m.label == NAME and m.op == "="), None)
        candidates = index.samples if name is None else index.named(name)
        return [s for s in candidates if self.selects(s.labels)]


@dataclass(frozen=True)
class Negate:
    expr: Node

    def evaluate(self, index: SeriesIndex) -> Value:
        value = self.expr.evaluate(index)
        if isinstance(value, float):
            return -value
        return [Sample(_without_name(s.labels), -s.value, s.fresh) for s in value]


def _divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}
_COMPARISON: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    on: tuple[str, ...] | None = None  # on(...) when set, else ignoring(...)
    ignoring: tuple[str, ...] = ()

    def evaluate(self, index: SeriesIndex) -> Value:
        lhs, rhs = self.lhs.evaluate(index), self.rhs.evaluate(index)
        if isinstance(lhs, float) and isinstance(rhs, float):
            return _ARITHMETIC[self.op](lhs, rhs)
        if isinstance(lhs, float) or isinstance(rhs, float):
            return self._with_scalar(lhs, rhs)
        assert isinstance(lhs, list) and isinstance(rhs, list)
        if self.op == "or":
            taken = {self._signature(s.labels) for s in lhs}
            return lhs + [s for s in rhs if self._signature(s.labels) not in taken]
        return self._matched(lhs, rhs)

    def _with_scalar(self, lhs: Value, rhs: Value) -> Vector:
        vector_left = isinstance(lhs, list)
        vector = lhs if isinstance(lhs, list) else rhs
        scalar = rhs if isinstance(rhs, float) else lhs
        assert isinstance(vector, list) and isinstance(scalar, float)
        if self.op in _COMPARISON:
            compare = _COMPARISON[self.op]
            return [
                s
                for s in vector
                if (compare(s.value, scalar) if vector_left else compare(scalar, s.value))
            ]
        apply = _ARITHMETIC[self.op]
        return [
            Sample(
                _without_name(s.labels),
                apply(s.value, scalar) if vector_left else apply(scalar, s.value),
                s.fresh,
            )
            for s in vector
        ]

    def _signature(self, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        if self.on is not None:
            return tuple((k, labels.get(k, "")) for k in self.on)
        return tuple(
            sorted((k, v) for k, v in labels.items() if k != NAME and k not in self.ignoring)
        )

    def _result_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        keep_name = self.op in _COMPARISON
        if self.on is not None:
            out = {k: v for k, v in labels.items() if k in self.on}
        else:
            out = {k: v for k, v in labels.items() if k not in self.ignoring and k != NAME}
        if keep_name and NAME in labels:
            out[NAME] = labels[NAME]
        return out

    def _matched(self, lhs: Vector, rhs: Vector) -> Vector:
        right: dict[tuple[tuple[str, str], ...], Sample] = {}
        for s in rhs:
            key = self._signature(s.labels)
            if key in right:
                raise EvaluationError(
                    f"many-to-many matching: more than one series on the right of {self.op!r} "
                    f"for the labels {dict(key)}; aggregate them or match on() fewer labels"
                )
            right[key] = s
        out: Vector = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for s in lhs:
            key = self._signature(s.labels)
            other = right.get(key)
            if other is None:
                continue
            if key in seen:
                raise EvaluationError(
                    f"many-to-one matching: more than one series on the left of {self.op!r} "
                    f"for the labels {dict(key)}; aggregate them or match on() fewer labels"
                )
            seen.add(key)
            fresh = s.fresh or other.fresh
            if self.op in _COMPARISON:
                if _COMPARISON[self.op](s.value, other.value):
                    out.append(Sample(self._result_labels(s.labels), s.value, fresh))
            else:
                value = _ARITHMETIC[self.op](s.value, other.value)
                out.append(Sample(self._result_labels(s.labels), value, fresh))
        return out


_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda v: math.fsum(v),
    "avg": lambda v: math.fsum(v) / len(v),
    "min": min,
    "max": max,
    "count": lambda v: float(len(v)),
}


@dataclass(frozen=True)
class Aggregate:
    op: str
    expr: Node
    grouping: tuple[str, ...] = ()
    without: bool = False

    def evaluate(self, index: SeriesIndex) -> Value:
        vector = self.expr.evaluate(index)
        assert isinstance(vector, list)
        groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
        for s in vector:
            if self.without:
                key = tuple(
                    sorted(
                        (k, v) for k, v in s.labels.items() if k != NAME and k not in self.grouping
                    )
                )
            else:
                key = tuple((k, s.labels[k]) for k in self.grouping if k in s.labels)
            groups.setdefault(key, []).append(s)
        reduce = _AGGREGATIONS[self.op]
        return [
            Sample(dict(key), reduce([s.value for s in members]), any(s.fresh for s in members))
            for key, members in groups.items()
        ]


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]

    def evaluate(self, index: SeriesIndex) -> Value:
        values = [a.evaluate(index) for a in self.args]
        if self.function == "vector":
            assert isinstance(values[0], float)
            return [Sample({}, values[0], False)]
        if self.function == "histogram_quantile":
            q, vector = values
            assert isinstance(q, float) and isinstance(vector, list)
            return _histogram_quantile(q, vector)
        vector = values[0]
        assert isinstance(vector, list)
        if self.function == "abs":
            return [Sample(_without_name(s.labels), abs(s.value), s.fresh) for s in vector]
        bound = values[1]
        assert isinstance(bound, float)
        clamp = max if self.function == "clamp_min" else min
        return [Sample(_without_name(s.labels), clamp(s.value, bound), s.fresh) for s in vector]


def _histogram_quantile(q: float, buckets: Vector) -> Vector:
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, Sample]]] = {}
    for s in buckets:
        try:
            bound = float(s.labels.get("le", ""))
        except ValueError:
            continue  # not a bucket: PromQL ignores it too
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in (NAME, "le")))
        groups.setdefault(key, []).append((bound, s))
    return [
        Sample(
            dict(key),
            bucket_quantile(q, [b for b, _ in members], [s.value for _, s in members]),
            any(s.fresh for _, s in members),
        )
        for key, members in groups.items()
    ]


Node: TypeAlias = Number | Selector | Negate | Binary | Aggregate | Call


def selectors(node: Node) -> list[Selector]:
    """Every selector an expression reads.

    >>> [s.matchers[0].value for s in selectors(parse("1 - a / sum(b)"))]
    ['a', 'b']
    """
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Negate | Aggregate):
        return selectors(node.expr)
    if isinstance(node, Binary):
        return selectors(node.lhs) + selectors(node.rhs)
    if isinstance(node, Call):
        return [s for arg in node.args for s in selectors(arg)]
    return []


def is_scalar(node: Node) -> bool:
    """Whether ``node`` evaluates to a number rather than a vector."""
    if isinstance(node, Number):
        return True
    if isinstance(node, Negate):
        return is_scalar(node.expr)
    if isinstance(node, Binary):
        return is_scalar(node.lhs) and is_scalar(node.rhs)
    return False


# -- the parser ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/(){},=<>\[\]^%])
    )""",
    re.VERBOSE,
)
_FUNCTIONS = {"histogram_quantile": 2, "clamp_min": 2, "clamp_max": 2, "abs": 1, "vector": 1}
_RATE_FUNCTIONS = {"rate", "irate", "increase", "delta", "idelta", "deriv"}
_UNSUPPORTED_KEYWORDS = {"group_left", "group_right", "bool", "and", "unless", "offset"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return [*out, _Token("end", "", pos)]
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise RuleError(f"unexpected character {text[pos]!r} at position {pos} in {text!r}")
        out.append(
            _Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup))
        )
        pos = match.end()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def fail(self, reason: str) -> RuleError:
        token = self.tokens[self.at]
        where = f"at position {token.pos}" if token.kind != "end" else "at the end"
        return RuleError(f"{reason} {where} in {self.text!r}")

    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.at + offset, len(self.tokens) - 1)]

    def take(self, text: str | None = None) -> _Token:
        token = self.tokens[self.at]
        if text is not None and token.text != text:
            shown = repr(token.text) if token.kind != "end" else "the end"
            raise self.fail(f"expected {text!r}, found {shown}")
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.binary(0)
        word = self.peek().text
        if word in _UNSUPPORTED_KEYWORDS:
            raise self.fail(f"{word} is not supported")
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {word!r}")
        return node

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("or",),
        tuple(_COMPARISON),
        ("+", "-"),
        ("*", "/"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek().text in self._LEVELS[level] and self.peek().kind in ("op", "ident"):
            op = self.take().text
            on, ignoring = self.matching()
            rhs = self.binary(level + 1)
            node = self.checked(Binary(op, node, rhs, on, ignoring))
        return node

    def matching(self) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        word = self.peek().text
        if word in ("group_left", "group_right", "bool"):
            raise self.fail(f"{word} is not supported")
        if word == "on":
            self.take()
            return self.label_list(), ()
        if word == "ignoring":
            self.take()
            return None, self.label_list()
        return None, ()

    def checked(self, node: Binary) -> Binary:
        scalars = is_scalar(node.lhs), is_scalar(node.rhs)
        if node.op == "or" and any(scalars):
            raise self.fail("'or' needs vectors on both sides")
        if node.op in _COMPARISON and all(scalars):
            raise self.fail("a comparison between two numbers filters nothing")
        if (node.on is not None or node.ignoring) and any(scalars):
            raise self.fail("on()/ignoring() needs vectors on both sides")
        return node

    def unary(self) -> Node:
        if self.peek().text in ("-", "+") and self.peek().kind == "op":
            sign = self.take().text
            inner = self.unary()
            return Negate(inner) if sign == "-" else inner
        return self.primary()

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.take()
            return Number(float(token.text))
        if token.text == "(":
            self.take()
            node = self.binary(0)
            self.take(")")
            return node
        if token.text == "{":
            return self.selector(None)
        if token.kind != "ident":
            shown = repr(token.text) if token.kind != "end" else "the end"
            raise self.fail(f"expected a number, a selector or '(', found {shown}")
        if token.text in _UNSUPPORTED_KEYWORDS:
            raise self.fail(f"{token.text} is not supported")
        if token.text in _AGGREGATIONS:
            return self.aggregation()
        if self.peek(1).text == "(":
            return self.call()
        self.take()
        return self.selector(token.text)

    def selector(self, name: str | None) -> Node:
        matchers = [] if name is None else [Matcher(NAME, "=", name)]
        if self.peek().text == "{":
            self.take()
            while self.peek().text != "}":
                label = self.take()
                if label.kind != "ident":
                    raise self.fail(f"expected a label name, found {label.text!r}")
                op = self.take()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise self.fail(f"expected =, !=, =~ or !~ after {label.text}")
                value = self.take()
                if value.kind != "string":
                    raise self.fail("expected a quoted label value")
                try:
                    matchers.append(Matcher(label.text, op.text, _unquote(value.text)))
                except re.error as error:
                    raise self.fail(f"bad regex {value.text} ({error})") from None
                if self.peek().text == ",":
                    self.take()
            self.take("}")
        if self.peek().text == "[":
            raise self.fail(
                "range selectors are not supported: counters already arrive as per-second "
                "rates, so select the counter itself"
            )
        if not matchers:
            raise self.fail("a selector needs a metric name or a label matcher")
        return Selector(tuple(matchers))

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        labels = []
        while self.peek().text != ")":
            label = self.take()
            if label.kind != "ident":
                raise self.fail(f"expected a label name, found {label.text!r}")
            labels.append(label.text)
            if self.peek().text == ",":
                self.take()
        self.take(")")
        return tuple(labels)

    def aggregation(self) -> Node:
        op = self.take().text
        grouping: tuple[str, ...] = ()
        without = False
        if self.peek().text in ("by", "without"):
            without = self.take().text == "without"
            grouping = self.label_list()
        self.take("(")
        expr = self.binary(0)
        if self.peek().text == ",":
            raise self.fail(f"{op} takes one argument")
        self.take(")")
        if not grouping and self.peek().text in ("by", "without"):
            without = self.take().text == "without"
            grouping = self.label_list()
        if is_scalar(expr):
            raise self.fail(f"{op} needs a vector, not a number")
        return Aggregate(op, expr, grouping, without)

    def call(self) -> Node:
        name = self.take().text
        if name in _RATE_FUNCTIONS:
            raise self.fail(
                f"{name}() is not needed: counters already arrive as per-second rates, so "
                "select the counter itself"
            )
        if name not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise self.fail(f"unknown function {name}() (supported: {known})")
        self.take("(")
        args = [self.binary(0)]
        while self.peek().text == ",":
            self.take()
            args.append(self.binary(0))
        self.take(")")
        if len(args) != _FUNCTIONS[name]:
            raise self.fail(f"{name}() takes {_FUNCTIONS[name]} arguments, got {len(args)}")
        scalar_first = name in ("histogram_quantile", "vector")
        for i, arg in enumerate(args):
            wants_scalar = (i == 0) == scalar_first
            if is_scalar(arg) != wants_scalar:
                wanted = "a number" if wants_scalar else "a vector"
                raise self.fail(f"argument {i + 1} of {name}() must be {wanted}")
        return Call(name, tuple(args))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse(text: str) -> Node:
    """Parse an expression; raises :class:`RuleError` naming the position and the reason.

    >>> index = SeriesIndex([Sample({"__name__": "a", "x": "1"}, 3.0, True),
    ...                      Sample({"__name__": "b", "x": "1"}, 4.0, False)])
    >>> [(dict(s.labels), s.value, s.fresh) for s in parse("1 - a / b").evaluate(index)]
    [({'x': '1'}, 0.25, True)]
    """
    return _Parser(text).parse()
