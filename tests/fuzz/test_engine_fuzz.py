"""The worker's rules (the Faust-free engine) under hostile records.

For every input topic the worker consumes, any bytes and any record that fits the schema but
nothing else (huge names, many labels, extreme numbers, odd Unicode, timestamps at the edges)
give outputs or a dead letter with its reason: nothing raises, no rule fails unexpectedly (an
``internal_error`` letter is the engine's last resort, and a fuzz failure here), and every
record produced fits ``max_record_bytes``. Over a long hostile run the engine's memory stays
bounded: entities by ``FORESIGHT_MAX_ENTITIES``, and everything else with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from schemas.codec import Codec, Message
from streams import topics
from streams.engine import Engine, Input, Outputs
from streams.settings import Settings
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import (
    NOW_MS,
    agent_events,
    labels,
    metric_batches,
    mutated,
)
from tests.schemas.samples import SAMPLES

NOW_S = NOW_MS / 1000
CODEC = Codec()
Record = dict[str, Any]
Feed = Callable[[Engine, Iterable[Input], float], Outputs]
DOORS: dict[str, tuple[topics.TopicSpec, Feed]] = {
    "metrics": (topics.METRICS, Engine.metrics),
    "agent_events": (topics.AGENT_EVENTS, Engine.agent_events),
    "labels": (topics.LABELS, Engine.labels),
}
RECORDS = {"metrics": metric_batches(), "agent_events": agent_events(), "labels": labels()}


def _engine(max_record_bytes: int = 1_000_000, **settings: Any) -> Engine:
    config = Settings(step_s=10.0, max_record_bytes=max_record_bytes, **settings)
    return Engine(config, lambda entity: (None, None), CODEC, "routing-stats")


def _inputs(topic: str, values: Sequence[tuple[bytes, bytes | None]]) -> list[Input]:
    return [
        Input(Message(topic, 0, offset, key, value), NOW_MS if offset % 2 else None)
        for offset, (value, key) in enumerate(values)
    ]


def _check(out: Outputs, limit: int, offsets: int) -> list[Record]:
    """The property every engine call holds; returns the dead letters."""
    letters = [CODEC.decode(r.value)[1] for r in out.records if r.topic == topics.DEADLETTER.name]
    for output in out.records:
        assert len(output.key or b"") + len(output.value) <= limit, output.topic
    for letter in letters:
        assert letter["reason"] and letter["error_kind"] != "internal_error", letter["reason"]
        assert -1 <= letter["offset"] < offsets
        event(f"dead letter: {letter['error_kind']}")
    for topic in sorted({r.topic for r in out.records} - {topics.DEADLETTER.name}):
        event(f"produced to {topic}")
    return letters


def _key(record: Record) -> bytes:
    """The Kafka key a producer gives the record: its entity or agent."""
    return str(record.get("entity", record.get("agent", ""))).encode()


@st.composite
def _raw(draw: st.DrawFn, door: str) -> tuple[bytes, bytes | None]:
    """Bytes a topic may carry: anything, or a valid record of its schema, damaged."""
    spec = DOORS[door][0]
    valid = CODEC.encode(spec.schema, SAMPLES[spec.schema])
    value = draw(st.one_of(st.binary(max_size=200), mutated(valid)))
    return value, draw(st.one_of(st.none(), st.binary(max_size=40)))


def _case(records: Callable[[str], st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An input topic, and a list of what ``records`` makes for it."""
    return st.sampled_from(sorted(DOORS)).flatmap(
        lambda door: st.tuples(st.just(door), st.lists(records(door), min_size=1, max_size=8))
    )


@fuzz(150)
@given(_case(_raw))
def test_any_bytes_on_any_input_topic_give_outputs_or_dead_letters(
    case: tuple[str, list[tuple[bytes, bytes | None]]],
) -> None:
    door, values = case
    spec, feed = DOORS[door]
    out = feed(_engine(), _inputs(spec.name, values), NOW_S)
    _check(out, 1_000_000, len(values))


@fuzz(150)
@given(_case(RECORDS.__getitem__), st.sampled_from([1_000_000, 20_000]))
@example(
    (
        "metrics",
        [SAMPLES["metric_batch"] | {"names": ["m" * 100_000], "values": [1.0], "kinds": []}],
    ),
    1_000_000,
)
@example(
    ("metrics", [{**SAMPLES["metric_batch"], "labels": {f"k{i}": "v" for i in range(10_000)}}]),
    1_000_000,
)
@example(  # found by this test: a letter's key travels twice, and was not counted
    ("metrics", [{**SAMPLES["metric_batch"], "entity": "\U0001f4a5" * 83_320}]), 1_000_000
)
@example(  # found by this test: a finite duration near 1e308 ms overflowed the statistics
    (
        "agent_events",
        [SAMPLES["agent_event"] | {"phase": "SUCCEEDED", "duration_ms": 3.47e307}],
    ),
    1_000_000,
)
def test_hostile_records_give_outputs_or_dead_letters_that_fit_kafka(
    case: tuple[str, list[Record]], limit: int
) -> None:
    door, records = case
    spec, feed = DOORS[door]
    engine = _engine(limit)
    values = [(CODEC.encode(spec.schema, r), _key(r)) for r in records]
    inputs = _inputs(spec.name, values)
    _check(feed(engine, inputs, NOW_S), limit, len(inputs))
    # The same records again, a step later: replays and state carried between calls.
    _check(feed(engine, inputs, NOW_S + 10), limit, len(inputs))
    _check(engine.tick(NOW_S + 20), limit, len(inputs))
