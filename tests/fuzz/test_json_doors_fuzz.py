"""The JSON doors' rules: agent events (``POST /api/v1/agent-events``) and WebSocket subscribe
messages (the gateway's ``/ws``).

Any decoded JSON value gives records or the list of what is wrong with them, and what the
agent-event rules accept fits the AgentEvent schema (the route produces it). Any text a
WebSocket client sends gives a subscription or a SubscriptionError, whose message the gateway
sends back; nothing else is raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from connectors.gateway_filters import SubscriptionError, read_subscription
from connectors.ingest_http import validate_agent_events
from schemas.codec import Codec
from streams.validation import Limits, check_agent_event
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import NOW_MS, agent_events, names, numbers, timestamps

CODEC = Codec()
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00"])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),
    numbers,
    names,
    SURROGATES,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(names, SURROGATES), children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def spoiled(draw: st.DrawFn, records: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A record of ``records`` with some fields replaced by any JSON value, removed, or
    added."""
    record: dict[str, Any] = draw(records)
    for field in draw(st.sets(st.sampled_from(sorted(record)), max_size=3)):
        if draw(st.booleans()):
            del record[field]
        else:
            record[field] = draw(json_values)
    if draw(st.booleans()):
        record[draw(names)] = draw(json_values)
    return record


def records_or_every_problem(
    validate: Callable[[Any, int], tuple[list[dict[str, Any]], list[Any]]],
    schema: str,
    payload: Any,
) -> None:
    """A JSON door's rules give every problem, each said for a person, or records
    ``schema`` takes."""
    records, errors = validate(payload, NOW_MS)
    if errors:
        event("refused")
        for error in errors:
            assert error.reason and json.dumps(error.as_dict())
        return
    event("accepted")
    for record in records:
        CODEC.encode(schema, record)  # what the rules accept, the schema takes


event_like = spoiled(agent_events())
payloads = st.one_of(json_values, event_like, st.lists(event_like, max_size=5))


@fuzz(300)
@given(payloads)
@example({"agent": "\ud800", "task_id": "t", "task_type": "x", "phase": "STARTED", "event_time": 1})
@example([])
@example({"agent": "a\nb", "task_id": "t", "task_type": "x", "phase": "STARTED", "event_time": 1})
@example({"agent": "a", "task_id": "t", "task_type": "x", "phase": "STARTED", "event_time": 0})
@example({"event_time": 10**400})  # found: the hours ahead overflowed a float (a 500)
def test_any_json_gives_agent_events_or_every_problem(payload: Any) -> None:
    records_or_every_problem(validate_agent_events, "agent_event", payload)
    # What the door takes, the worker takes: no 202 for an event it then dead-letters.
    worker = Limits()
    records, errors = validate_agent_events(
        payload, NOW_MS, worker.max_future_ms, worker.max_age_ms
    )
    for record in records if not errors else []:
        assert check_agent_event(record, NOW_MS, worker) is None, record


subscribe_fields = st.fixed_dictionaries(
    {"type": st.one_of(st.just("subscribe"), json_values)},
    optional={
        "topics": st.one_of(st.lists(st.sampled_from(["predictions", "alerts"])), json_values),
        "entity": st.one_of(names, json_values),
        "labels": st.one_of(st.dictionaries(names, names, max_size=3), json_values),
        "kinds": st.one_of(st.lists(st.sampled_from(["ANOMALY", "FORECAST"])), json_values),
        "min_severity": st.one_of(st.sampled_from(["INFO", "CRITICAL"]), json_values),
        "last_id": st.one_of(timestamps, json_values),
    },
)


def _text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(_text),
    subscribe_fields.map(_text),
    st.integers(1, 60_000).map(lambda depth: "[" * depth + "]" * depth),
)


@fuzz(300)
@given(messages)
@example("[" * 65_000)  # found by this suite: json.loads raised RecursionError, not ValueError
@example('{"type": "subscribe", "labels": ' + '{"a": ' * 30_000 + "1" + "}" * 30_001)
@example(b"\xff\xfe")
@example('{"type": "subscribe", "entity": "\\ud800"}')  # found (on the real gateway): refused now
@example('{"type": "subscribe", "labels": {"\\udfff": "x"}}')
def test_any_websocket_message_gives_a_subscription_or_its_error(raw: str | bytes) -> None:
    try:
        subscription = read_subscription(raw)
    except SubscriptionError as error:
        event("refused")
        answer = str(error)  # what the client is sent
    else:
        event("subscribed")
        # What the gateway looks up in Redis and sends back has a UTF-8 form.
        answer = json.dumps([subscription.entity, subscription.labels], ensure_ascii=False)
        answer.encode("utf-8")
    assert answer
