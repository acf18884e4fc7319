"""The worker's rules (the Faust-free engine) under hostile records.

For every input topic the worker consumes, any bytes and any record that fits the schema but
nothing else (huge names, many labels, extreme numbers, odd Unicode, timestamps at the edges)
give outputs or a dead letter with its reason: nothing raises, no rule fails unexpectedly (an
``internal_error`` letter is the engine's last resort, and a fuzz failure here), and every
record produced fits ``max_record_bytes``. Over a long hostile run the engine's memory stays
bounded: entities by ``FORESIGHT_MAX_ENTITIES``, and everything else with them.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hypothesis import currently_in_test_context, event, example, given
from hypothesis import strategies as st

from schemas import avro_writer
from schemas.codec import Codec, Message
from streams import topics
from streams.engine import Checkpoint, Engine, Input, Outputs
from streams.settings import Settings
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import (
    NOW_MS,
    agent_events,
    labels,
    metric_batches,
    mutated,
    routing_requests,
)
from tests.schemas.samples import SAMPLES

NOW_S = NOW_MS / 1000
CODEC = Codec()
Record = dict[str, Any]
Feed = Callable[[Engine, Iterable[Input], float], Outputs]


def _routed(feed: Feed) -> Feed:
    """``feed``, then its records on the internal routing topic through :meth:`Engine.route`,
    as the worker's routing agent takes them."""

    def through(engine: Engine, inputs: Iterable[Input], now_s: float) -> Outputs:
        out = feed(engine, inputs, now_s)
        routed = [r for r in out.records if r.topic == "routing-stats"]
        for offset, record in enumerate(routed):
            message = Message("routing-stats", 0, offset, record.key, record.value)
            out.extend(engine.route([Input(message)], now_s))
        return out

    return through


DOORS: dict[str, tuple[topics.TopicSpec, Feed]] = {
    "metrics": (topics.METRICS, Engine.metrics),
    "agent_events": (topics.AGENT_EVENTS, _routed(Engine.agent_events)),
    "labels": (topics.LABELS, Engine.labels),
    "routing_requests": (topics.ROUTING_REQUESTS, _routed(Engine.routing_requests)),
}
RECORDS = {
    "metrics": metric_batches(),
    "agent_events": agent_events(),
    "labels": labels(),
    "routing_requests": routing_requests(),
}


def _engine(max_record_bytes: int = 1_000_000, **settings: Any) -> Engine:
    config = Settings(step_s=10.0, max_record_bytes=max_record_bytes, **settings)
    return Engine(config, Checkpoint, CODEC, "routing-stats")


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
    if currently_in_test_context():
        for kind in sorted({letter["error_kind"] for letter in letters}):
            event(f"dead letter: {kind}")
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


def _held(engine: Engine) -> dict[str, int]:
    """How many things of each kind the engine holds between calls."""
    return {
        "entities": len(engine.entities),
        "entity bookkeeping": max(
            len(engine.entity_partition), len(engine.last_seen_s), len(engine.checkpointed)
        ),
        "agent x task type statistics": sum(len(s) for s in engine.agents.stats.values()),
        "agents": max(len(engine.agents.health), len(engine.agents.alert_states)),
        "routing arms": sum(len(a.agents) for a in engine.policy.arms.values()),
        "routing loads": len(engine.policy.loads),
        "agents' open tasks": len(engine.concurrency.open),
        "concurrency curves": len(engine.concurrency.curves),
        "scaling forecasts": len(engine.scaling.state),
        "failure-risk logs": len(engine.outcomes._logged),
    }


def _hostile_round(round_: int, size: int) -> tuple[list[Input], list[Input]]:
    """``size`` MetricBatches and AgentEvents, each from an entity, agent and task type never
    seen before, with long names and many labels."""
    now_ms = int(NOW_MS + round_ * 100_000)
    first = round_ * size  # offsets go on from round to round, without holes
    metrics, events = [], []
    for i in range(size):
        entity = f"{round_}-{i}-" + "e" * 200
        labels = {f"k{j}": "v" * 100 for j in range(60)}
        names = [f"m{j}-" + "n" * 200 for j in range(20)]
        batch = {"entity": entity, "event_time": now_ms, "labels": labels, "names": names,
                 "values": [float(j) for j in range(20)], "source": "fuzz"}  # fmt: skip
        metrics.append(Input(Message(topics.METRICS.name, 0, first + i, entity.encode(),
                                     CODEC.encode("metric_batch", batch))))  # fmt: skip
        for step, phase in enumerate(("STARTED", "SUCCEEDED")):
            agent_event = SAMPLES["agent_event"] | {
                "agent": f"{round_}-{i}-" + "a" * 200, "task_type": f"t{round_}-{i}",
                "phase": phase, "event_time": now_ms, "labels": labels,
            }  # fmt: skip
            value = CODEC.encode("agent_event", agent_event)
            events.append(
                Input(Message(topics.AGENT_EVENTS.name, 0, 2 * (first + i) + step, None, value))
            )
    return metrics, events


def test_memory_stays_bounded_over_a_long_hostile_run() -> None:
    """New entities, agents and task types without end: the engine holds at most
    FORESIGHT_MAX_ENTITIES of each, and its memory stops growing once it holds that many."""
    limit = 40
    engine = _engine(max_entities=limit, entity_idle_s=150.0)
    traced = []
    tracemalloc.start()
    try:
        for round_ in range(10):
            now_s = NOW_S + round_ * 100
            metrics, events = _hostile_round(round_, 3 * limit // 2)
            _check(engine.metrics(metrics, now_s), 1_000_000, metrics[-1].message.offset + 1)
            out = engine.agent_events(events, now_s)
            _check(out, 1_000_000, events[-1].message.offset + 1)
            routed = [r for r in out.records if r.topic == "routing-stats"]
            for offset, update in enumerate(routed):
                message = Message("routing-stats", 0, offset, update.key, update.value)
                _check(engine.route([Input(message)], now_s), 1_000_000, 1)
            engine.tick(now_s)
            del metrics, events, out
            # The Avro writer's cache of short strings is bounded by its own count, which 10
            # rounds of new names (each step's prediction id is one) do not reach.
            avro_writer._STRINGS.clear()
            traced.append(tracemalloc.get_traced_memory()[0])
            held = _held(engine)
            assert all(count <= limit for count in held.values()), (round_, held)
    finally:
        tracemalloc.stop()
    # Full after the first rounds; the last rounds add no more than noise.
    assert traced[-1] < traced[3] * 1.05, [size // 1024 for size in traced]
