"""The worker's rules in memory: no Faust, no Kafka; a dict stands in for the changelog."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import jsonschema
import numpy as np
import pytest
from prometheus_client import REGISTRY

from connectors import prometheus as metrics
from connectors.remote_write import RemoteWriteDecoder
from models.base import FloatArray
from models.drift import FeatureDriftWatch, FeatureReference
from models.entity import BatchModel, step_end_after, step_phase_ms
from models.explain import ENTITY_METRIC, Driver
from models.features import vector_names
from models.traffic import TrafficSplit, serving
from schemas.codec import Codec, Message
from schemas.json_form import json_form, json_schema
from schemas.predictions import KINDS, prediction_rows
from streams import topics
from streams.engine import Checkpoint, Engine, Input, Outputs, journal
from streams.engine.engine import routed_request
from streams.settings import Settings
from tests.connectors.prometheus_proto import Series, snappy, write_request
from tests.exposition import NODE_EXPORTER, TYPE_NUMBERS, scrape

Record = dict[str, Any]
NOW_S = 1_800_000_000.0
STEP_MS = 10_000
CODEC = Codec()


class Changelog:
    """The worker's tables, as a dict: what the engine checkpoints, it can load."""

    def __init__(self) -> None:
        self.saved: dict[str, Checkpoint] = {}

    def load(self, entity: str) -> Checkpoint:
        return self.saved.get(entity, Checkpoint(entity))

    def take(self, engine: Engine, records: Sequence[Input], now_s: float) -> Outputs:
        """A worker's pass and the commit after it: the pass's checkpoints are written, then
        the journals the commit writes."""
        out = engine.metrics(records, now_s)
        self.write(out.checkpoints)
        self.write(engine.commit())
        return out

    def write(self, checkpoints: Sequence[Checkpoint]) -> None:
        for c in checkpoints:
            held = self.load(c.entity)
            segments = dict(enumerate(held.journal))
            segments.update(enumerate(c.journal, c.segment))
            for dropped in range(c.drop_segments):
                del segments[dropped]
            # Loaded as the worker loads them: from segment 0 to the first key missing.
            run = itertools.takewhile(bool, (segments.get(i, b"") for i in itertools.count()))
            self.saved[c.entity] = Checkpoint(
                c.entity,
                held.windows if c.windows is None else c.windows,
                tuple(run),
                held.models if c.models is None else c.models,
            )


def _engine(changelog: Changelog, **settings: Any) -> Engine:
    return Engine(Settings(step_s=10.0, **settings), changelog.load, CODEC, "routing-stats")


class Feed:
    """Encodes MetricBatches as consumed records, with rising offsets per partition."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}

    def record(
        self, entity: str, t_ms: int, values: dict[str, float], partition: int = 0, **extra: Any
    ) -> Input:
        record = {"entity": entity, "event_time": t_ms, "labels": {}, "names": list(values),
                  "values": list(values.values()), "source": "test", **extra}  # fmt: skip
        return self.encoded(entity, CODEC.encode("metric_batch", record), partition)

    def encoded(self, entity: str, value: bytes, partition: int = 0) -> Input:
        offset = self.offsets.get(partition, -1) + 1
        self.offsets[partition] = offset
        return Input(Message(topics.METRICS.name, partition, offset, entity.encode(), value))


def _decoded(out: Outputs, topic: str) -> list[Record]:
    return [CODEC.decode(r.value)[1] for r in out.records if r.topic == topic]


def _series(feed: Feed, entity: str, steps: int, start_ms: int, **kw: Any) -> list[Input]:
    return [
        feed.record(entity, start_ms + k * STEP_MS, {"cpu": 10.0 + k % 3, "mem": 40.0}, **kw)
        for k in range(steps)
    ]


def _on_grid(entity: str, t_ms: int) -> int:
    """The start of the entity's step at or before ``t_ms``: records every step from there
    close a step each (an entity's steps end on its own phase of the step)."""
    return step_end_after(t_ms, step_phase_ms(entity, STEP_MS / 1000), STEP_MS / 1000) - STEP_MS


T0_MS = _on_grid("web-1", int(NOW_S * 1000) - 3_600_000)


def _predictions_counted() -> dict[str, float]:
    return {kind: REGISTRY.get_sample_value("foresight_predictions_total", {"kind": kind}) or 0.0
            for kind in KINDS}  # fmt: skip


def test_records_close_steps_and_every_step_gives_features_and_predictions() -> None:
    engine, feed = _engine(Changelog()), Feed()
    before = _predictions_counted()
    out = engine.metrics(_series(feed, "web-1", 5, T0_MS), NOW_S)
    features = _decoded(out, topics.FEATURES.name)
    assert [f["event_time"] for f in features] == [T0_MS + k * STEP_MS for k in range(5)]
    predictions = _decoded(out, topics.PREDICTIONS.name)
    assert (
        len(predictions) == 5
        and predictions[-1]["prediction_id"] == f"web-1@{features[-1]['event_time']}"
    )
    assert _decoded(out, topics.DEADLETTER.name) == []
    assert [c.entity for c in out.checkpoints] == ["web-1"]
    # /metrics counts every prediction (every row of the batches), by kind.
    after, rows = _predictions_counted(), Counter(k for p in predictions for k in p["kinds"])
    assert {kind: after[kind] - before[kind] for kind in KINDS} == {k: rows[k] for k in KINDS}
    assert rows["ANOMALY"] > 0


def test_json_twins_copy_every_output_only_when_asked() -> None:
    off = _engine(Changelog()).metrics(_series(Feed(), "web-1", 3, T0_MS), NOW_S)
    assert {r.topic for r in off.records} == {topics.FEATURES.name, topics.PREDICTIONS.name}
    on = _engine(Changelog(), json_twins=True).metrics(_series(Feed(), "web-1", 3, T0_MS), NOW_S)
    for source in (topics.FEATURES, topics.PREDICTIONS):
        twins = [json.loads(r.value) for r in on.records if r.topic == f"{source.name}.json"]
        originals = _decoded(on, source.name)
        assert twins == [json_form(source.schema)(r) for r in originals]
        assert [r.key for r in on.records if r.topic == f"{source.name}.json"] == [b"web-1"] * 3
        for twin in twins:
            jsonschema.validate(twin, json_schema(source.schema))


def test_a_replayed_record_is_counted_once_after_a_restart() -> None:
    changelog, feed = Changelog(), Feed()
    first = _engine(changelog)
    records = _series(feed, "web-1", 12, T0_MS)
    changelog.take(first, records[:8], NOW_S)
    # A restarted worker resumes from an older committed offset: records 5..11 come again.
    second = _engine(changelog)
    out = second.metrics(records[5:], NOW_S)
    hour_count = _decoded(out, topics.FEATURES.name)[-1]
    index = vector_names(hour_count).index("cpu:1h:count")
    assert hour_count["values"][index] == 12


def test_records_between_steps_are_checkpointed_and_counted_once_after_a_restart() -> None:
    changelog, feed = Changelog(), Feed()
    first = _engine(changelog)
    # A scrape a second, a step every ten: 25 records, steps closed by records 0, 10 and 20.
    records = [feed.record("web-1", T0_MS + k * 1000, {"cpu": float(k)}) for k in range(25)]
    changelog.take(first, records[:11], NOW_S)  # up to a step
    changelog.take(first, records[11:15], NOW_S)  # between steps
    # A restarted worker resumes from an older committed offset: records 12..24 come again.
    second = _engine(changelog)
    out = second.metrics(records[12:], NOW_S)
    features = _decoded(out, topics.FEATURES.name)[-1]
    counted = features["values"][vector_names(features).index("cpu:1h:count")]
    assert (features["event_time"], counted) == (T0_MS + 20_000, 21)


def test_offsets_the_consumer_skipped_are_reported_not_hidden() -> None:
    engine, feed = _engine(Changelog()), Feed()
    records = _series(feed, "web-1", 6, T0_MS)
    labels = {"topic": topics.METRICS.name, "partition": "0"}
    before = REGISTRY.get_sample_value("foresight_skipped_offsets_total", labels) or 0.0
    engine.metrics(records[:2] + records[4:], NOW_S)  # offsets 2 and 3 never come
    assert engine.health_fields()["skipped_offsets"] == 2
    assert REGISTRY.get_sample_value("foresight_skipped_offsets_total", labels) == before + 2
    engine.metrics(records[:3], NOW_S)  # records read again are not a hole
    assert engine.health_fields()["skipped_offsets"] == 2


def _produced(out: Outputs) -> list[tuple[Any, ...]]:
    """What an engine call produced: features and alerts as their bytes, predictions one row
    per prediction, with the entity and step (their wall-clock fields left out)."""
    produced: list[tuple[Any, ...]] = []
    for r in out.records:
        if r.topic != topics.PREDICTIONS.name:
            produced.append((r.topic, r.key, r.value))
            continue
        batch = CODEC.decode(r.value)[1]
        produced += [(batch["entity"], batch["event_time"], p) for p in prediction_rows(batch)]
    return produced


def _latest_forecasts(produced: list[tuple[Any, ...]]) -> dict[str, dict[Any, Record]]:
    """Each entity's latest forecast of each metric and horizon, among ``produced``."""
    latest: dict[str, dict[Any, Record]] = defaultdict(dict)
    for entity, _, p in produced:
        if isinstance(p, dict) and p["kind"] == "FORECAST":
            latest[entity][(p["metric"], p["horizon_s"])] = p
    return latest


def test_an_engine_restored_from_its_changelog_goes_on_as_if_it_had_never_stopped() -> None:
    """Same input, same outputs: after a restart from the changelog (mid-step, its models
    checkpointed with every pass here), the features, predictions and alerts equal those of
    the engine that ran on; only each entity's latest forecasts go out once more, with its
    first step (they are not checkpointed: it makes them anew from its forecaster)."""
    rng, feed = np.random.default_rng(2), Feed()
    names = ["cpu_percent", "memory_percent", "disk_used_percent", "request_latency_ms"]
    records = []
    for k in range(200):  # a scrape every 5 s for 1,000 s: forecast steps on both sides
        for e, entity in enumerate(("web-1", "web-2", "web-3")):
            values = rng.normal(40.0 + 10 * e, 3.0, len(names))
            values[1] += 0.05 * k  # memory fills up: failure risks and bottlenecks
            shown = names if k > 20 * e else names[:2]  # metrics arrive over time
            records.append(
                feed.record(entity, T0_MS + k * 5000, dict(zip(shown, values, strict=False)))
            )
    chunks = [records[at : at + 7] for at in range(0, len(records), 7)]
    split = len(chunks) // 2 + 1  # mid-step: the checkpoint holds records since its snapshot
    changelog, settings = Changelog(), {"model_checkpoint_s": 0.0, "anomaly_warmup_steps": 10}
    ran_on, stopped = (_engine(changelog, **settings) for _ in range(2))
    before: list[tuple[Any, ...]] = []
    expected: list[tuple[Any, ...]] = []
    for k, chunk in enumerate(chunks):
        produced = _produced(ran_on.metrics(chunk, NOW_S))
        if k < split:
            before += produced
            changelog.take(stopped, chunk, NOW_S)
        else:
            expected += produced
    restarted = _engine(changelog, **settings)
    got = [row for chunk in chunks[split:] for row in _produced(restarted.metrics(chunk, NOW_S))]
    again = [row for row in got if row not in expected]
    assert [row for row in got if row not in again] == expected
    predictions = [p for _, _, p in expected if isinstance(p, dict)]
    assert {p["kind"] for p in predictions} >= {"FORECAST", "FAILURE_RISK"}
    assert any(p["kind"] == "ANOMALY" and p["score"] > 0 for p in predictions)
    first_step = {entity: t for entity, t, p in reversed(expected) if isinstance(p, dict)}
    assert {(entity, t) for entity, t, _ in again} == set(first_step.items())
    assert _latest_forecasts(again) == _latest_forecasts(before)


@pytest.mark.parametrize("crash", [645, 650], ids=["between steps", "at a step"])
def test_each_pass_leaves_its_records_and_steps_to_the_commit_and_a_restore_resumes_exactly(
    crash: int,
) -> None:
    changelog, feed = Changelog(), Feed()
    # A scrape a second for ten minutes, then one a pass: steps close at records 0, 10, 20...
    records = [
        feed.record("web-1", T0_MS + k * 1000, {"cpu": float(k % 7), "mem": 40.0 + k, "io": 1.0})
        for k in range(670)
    ]
    first, uninterrupted = _engine(changelog), _engine(Changelog())
    changelog.take(first, records[:600], NOW_S)
    segments: list[int] = []
    for k in range(600, crash):
        written = first.metrics([records[k]], NOW_S).checkpoints
        committed = first.commit()
        if written:  # the journal outweighed its snapshot: a snapshot, and no journal since
            assert [(bool(c.windows), c.journal) for c in written] == [(True, ())]
            assert committed == []
            segments.append(-1)
        else:  # a journal segment alone, with the commit: the pass' record, and its step
            assert [c.windows for c in committed] == [None]
            segments.append(committed[0].segment)
            taken = journal.records(committed[0].journal, changelog.saved["web-1"].windows or b"")
            steps = [journal.STEP] if k % 10 == 0 else []
            assert [offset for offset, _ in taken] == [records[k].message.offset, *steps]
        changelog.write(written + committed)
    # Steps go into segments (those at records 600 and 610 here); a snapshot comes at a step
    # once the journal since the last outweighs it, and the segments after it count from 0.
    folds = [600 + i for i, segment in enumerate(segments) if segment < 0]
    assert folds and all(k % 10 == 0 for k in folds) and min(segments[0], segments[10]) >= 0
    for run in "".join("s" if s < 0 else "." for s in segments).split("s"):
        assert len(run) <= 20, "a snapshot every second step of this entity"
    assert all(b == (0 if a < 0 else a + 1) for a, b in itertools.pairwise(segments) if b >= 0)
    crashed = first.metrics([records[crash]], NOW_S).checkpoints
    # The worker dies before the commit after the crash pass: the pass' record, and at a
    # step the step, never reach the changelog.
    assert crashed == []
    # It resumes from its committed offset, two records back: the records the changelog
    # holds are skipped as replays, the steps among them come back from the journal, and the
    # crash pass' step closes again.
    resume = crash - 2
    second = _engine(changelog)
    resumed = [_decoded(second.metrics([r], NOW_S), topics.FEATURES.name) for r in records[resume:]]
    uninterrupted.metrics(records[:resume], NOW_S)
    expected = [
        _decoded(uninterrupted.metrics([r], NOW_S), topics.FEATURES.name) for r in records[resume:]
    ]
    assert resumed[2:] == expected[2:] and sum(map(len, expected[2:])) == 2
    assert (
        second.entities["web-1"].windows_bytes() == uninterrupted.entities["web-1"].windows_bytes()
    )


def test_a_commit_writes_the_journals_of_the_passes_since_longest_waiting_first() -> None:
    changelog, feed = Changelog(), Feed()
    a, b = ([feed.record(e, T0_MS + k * 1000, {"cpu": float(k)}) for k in range(3)] for e in "ab")
    engine, uninterrupted = _engine(changelog), _engine(Changelog())
    for chunk in ([a[0], b[0]], [b[1]], [a[1]], [b[2], a[2]]):
        written = engine.metrics(chunk, NOW_S).checkpoints
        assert all(c.windows and c.journal == () for c in written), "snapshots only"
        changelog.write(written)
        uninterrupted.metrics(chunk, NOW_S)
    committed = engine.commit()
    assert [(c.entity, c.windows) for c in committed] == [("b", None), ("a", None)]
    assert all(c.journal for c in committed) and engine.commit() == []
    changelog.write(committed)
    _assert_restored_with_every_record(changelog, uninterrupted, feed, NOW_S)


def _assert_restored_with_every_record(
    changelog: Changelog, uninterrupted: Engine, feed: Feed, now_s: float
) -> None:
    """Entities a and b come back from the changelog with every record they took: after one
    more record each, their windows equal those of an engine that never stopped."""
    restored = _engine(changelog)
    later = [feed.record(entity, T0_MS + 3000, {"cpu": 3.0}) for entity in "ab"]
    for engine in (restored, uninterrupted):
        engine.metrics(later, now_s)
    for entity in "ab":
        restored_windows = restored.entities[entity].windows_bytes()
        assert restored_windows == uninterrupted.entities[entity].windows_bytes()


def test_journals_are_due_once_they_have_waited_and_hold_the_records_taken_meanwhile() -> None:
    changelog, feed = Changelog(), Feed()
    a, b = ([feed.record(e, T0_MS + k * 1000, {"cpu": float(k)}) for k in range(3)] for e in "ab")
    engine, uninterrupted = _engine(changelog, worker_journal_s=0.5), _engine(Changelog())
    changelog.write(engine.metrics([a[0], b[0]], NOW_S).checkpoints)  # the first snapshots
    uninterrupted.metrics([a[0], b[0]], NOW_S)
    passes = [([a[1]], NOW_S + 0.1), ([b[1]], NOW_S + 0.3), ([a[2]], NOW_S + 0.4)]
    for chunk, now_s in passes:
        assert engine.metrics(chunk, now_s).checkpoints == []
        uninterrupted.metrics(chunk, now_s)
    assert engine.journals_due(NOW_S + 0.5) == [], "none has waited half a second"
    (due_a,) = engine.journals_due(NOW_S + 0.6)
    assert due_a.entity == "a" and engine.journals_due(NOW_S + 0.7) == []
    held = changelog.saved["a"].windows or b""
    taken = journal.records(due_a.journal, held)
    assert [offset for offset, _ in taken] == [a[1].message.offset, a[2].message.offset]
    (due_b,) = engine.journals_due(NOW_S + 0.8)
    assert due_b.entity == "b" and engine.commit() == []
    changelog.write([due_a, due_b])
    _assert_restored_with_every_record(changelog, uninterrupted, feed, NOW_S + 1)


def test_a_step_the_clock_closes_before_a_commit_goes_in_the_journal_after_its_records() -> None:
    changelog, feed = Changelog(), Feed()
    records = [feed.record("web-1", T0_MS + k * 1000, {"cpu": float(k % 5)}) for k in range(20)]
    first, uninterrupted = _engine(changelog), _engine(Changelog())
    changelog.take(first, records[:11], NOW_S)
    first.metrics(records[11:15], NOW_S)  # not committed yet
    # Idle past the next step's end: the clock closes it, and the commit's segment holds
    # the step after the records it read.
    assert _decoded(first.tick(NOW_S + 30), topics.FEATURES.name)
    (committed,) = first.commit()
    assert committed.windows is None
    taken = journal.records(committed.journal, changelog.saved["web-1"].windows or b"")
    assert [offset for offset, _ in taken] == [r.message.offset for r in records[11:15]] + [
        journal.STEP
    ]
    changelog.write([committed])
    second = _engine(changelog)
    uninterrupted.metrics(records[:15], NOW_S)
    uninterrupted.tick(NOW_S + 30)
    for engine in (second, uninterrupted):
        engine.metrics(records[15:], NOW_S + 30)
    assert (
        second.entities["web-1"].windows_bytes() == uninterrupted.entities["web-1"].windows_bytes()
    )


def test_a_journal_past_its_bound_between_steps_is_folded_into_a_new_snapshot() -> None:
    changelog, feed = Changelog(), Feed()
    names = [f"metric_{i}" for i in range(30)]
    # A record every 50 ms within one step, one a pass: after the first record's step, none
    # closes, and the journal grows.
    records = [
        feed.record("web-1", T0_MS + 100 + k * 50, {n: float(k + i) for i, n in enumerate(names)})
        for k in range(150)
    ]
    first, uninterrupted = _engine(changelog), _engine(Changelog())
    written = []
    for k, record in enumerate(records[:121]):
        out = first.metrics([record], NOW_S)
        assert k == 0 or not _decoded(out, topics.FEATURES.name), "no step closes"
        (checkpoint,) = [*out.checkpoints, *first.commit()]  # a snapshot or a journal
        changelog.write([checkpoint])
        written.append(checkpoint)
    snapshots = [k for k, c in enumerate(written) if c.windows is not None]
    assert len(snapshots) > 2 and snapshots[0] == 0
    for at, following in itertools.pairwise(snapshots):
        size = len(written[at].windows or b"")
        segments = written[at + 1 : following]
        assert [c.segment for c in segments] == list(range(len(segments))), "from 0, in order"
        assert all(c.windows is None and len(c.journal) == 1 for c in segments)
        held = sum(len(c.journal[0]) - 8 for c in segments)  # records, without the headers
        assert 0 < held <= size * journal.MAX_WEIGHT, "past its bound between steps"
    # A restart from the changelog, mid-journal, resumes exactly.
    assert written[-1].windows is None
    second = _engine(changelog)
    for record in records[121:]:
        second.metrics([record], NOW_S)
    uninterrupted.metrics(records, NOW_S)
    assert (
        second.entities["web-1"].windows_bytes() == uninterrupted.entities["web-1"].windows_bytes()
    )


def test_a_journal_with_all_its_segments_is_folded_into_a_new_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "MAX_SEGMENTS", 3)
    changelog, feed = Changelog(), Feed()
    # A record every 100 ms, one a pass: no step closes after the first record's, and the
    # journal stays far lighter than its snapshot.
    records = [
        feed.record("web-1", T0_MS + 100 + k * 100, {"cpu": float(k % 5)}) for k in range(40)
    ]
    first, uninterrupted = _engine(changelog), _engine(Changelog())
    written = []
    for record in records[:30]:
        out = first.metrics([record], NOW_S)
        (checkpoint,) = [*out.checkpoints, *first.commit()]
        changelog.write([checkpoint])
        written.append(checkpoint)
    # A snapshot, its three segments, a snapshot...: a segment holds one pass' record.
    assert [c.segment if c.windows is None else "snapshot" for c in written[:9]] == [
        "snapshot", 0, 1, 2, "snapshot", 0, 1, 2, "snapshot"
    ]  # fmt: skip
    assert all(len(c.journal) == 1 for c in written if c.windows is None)
    second = _engine(changelog)
    for record in records[30:]:
        second.metrics([record], NOW_S)
    uninterrupted.metrics(records, NOW_S)
    assert (
        second.entities["web-1"].windows_bytes() == uninterrupted.entities["web-1"].windows_bytes()
    )


def test_a_restore_takes_the_segments_of_its_snapshot_and_refuses_a_broken_one() -> None:
    taken, older = bytearray(), bytearray()
    journal.append(taken, 11, b"eleven")
    journal.append(older, 3, b"three")
    snapshot = b"FSE2snapshot"
    ours = journal.entry(journal.identity(snapshot), taken)
    theirs = journal.entry(journal.identity(b"FSE2older"), older)
    assert journal.records([ours, ours, theirs, ours], snapshot) == [(11, b"eleven")] * 2
    assert journal.records([theirs, ours], snapshot) == []
    with pytest.raises(ValueError, match="cut short"):
        journal.records([ours, ours[:-2]], snapshot)
    with pytest.raises(ValueError, match="not b'FSR1'"):
        journal.records([ours, b"FSE2" + ours[4:]], snapshot)


def test_an_evicted_entity_leaves_its_snapshot_alone_and_comes_back_exactly() -> None:
    changelog, feed = Changelog(), Feed()
    evicting = _engine(changelog, entity_idle_s=600.0)
    kept = _engine(Changelog(), entity_idle_s=100_000.0)
    records = [
        feed.record("web-1", T0_MS + k * 1000, {"cpu": float(k % 7), "mem": 40.0 + k})
        for k in range(30)
    ]
    for record in records[:15]:
        changelog.take(evicting, [record], NOW_S)
        kept.metrics([record], NOW_S)
    # Records 11 to 14 since the step's snapshot, then the previous snapshot's longer run.
    segments = changelog.saved["web-1"].journal
    assert len(segments) > 4
    out = evicting.tick(NOW_S + 700)
    kept.tick(NOW_S + 700)
    changelog.write(out.checkpoints)
    assert set(evicting.entities) == set() and set(kept.entities) == {"web-1"}
    (evicted,) = out.checkpoints
    # Every segment key it wrote is deleted (tombstones), the previous snapshot's too: the
    # compacted changelog keeps the snapshot alone.
    assert evicted.windows and evicted.models and evicted.journal == ()
    assert evicted.drop_segments == len(segments)
    assert changelog.saved["web-1"].journal == ()
    for record in records[15:]:
        changelog.take(evicting, [record], NOW_S + 700)
        kept.metrics([record], NOW_S + 700)
    assert evicting.entities["web-1"].windows_bytes() == kept.entities["web-1"].windows_bytes()


def test_an_entity_restored_only_for_records_it_already_holds_is_still_evicted() -> None:
    """After a restart, a host that has gone away comes back for its replayed records alone
    (all skipped): it must still leave memory when idle, or churned hosts fill the worker."""
    changelog, feed = Changelog(), Feed()
    records = [feed.record("gone-1", T0_MS + k * 1000, {"cpu": 1.0}) for k in range(5)]
    changelog.take(_engine(changelog), records, NOW_S)
    restarted = _engine(changelog, entity_idle_s=600.0)
    restarted.metrics(records[3:], NOW_S)  # replays from an older committed offset
    assert set(restarted.entities) == {"gone-1"}
    restarted.tick(NOW_S + 700)
    assert set(restarted.entities) == set()


def test_only_entities_idle_for_the_idle_time_are_evicted_whatever_order_they_came_in() -> None:
    engine, feed = _engine(Changelog(), entity_idle_s=600.0), Feed()
    for k, (entity, seen_s) in enumerate([("a", 0), ("b", 10), ("c", 20), ("a", 500)]):
        engine.metrics([feed.record(entity, T0_MS + k * 1000, {"cpu": 1.0})], NOW_S + seen_s)
    assert sorted(engine.evict_idle(NOW_S + 615, engine.outputs())) == ["b"]
    assert sorted(engine.entities) == ["a", "c"]
    assert sorted(engine.evict_idle(NOW_S + 1100, engine.outputs())) == ["a", "c"]


def test_a_fleet_that_starts_together_spreads_its_steps_over_the_step() -> None:
    """Hosts scraped every second from the same moment close their steps each on its own
    phase, one step length apart after the first: not all in the same second, a burst of
    work every step that the records behind it would wait for."""
    engine, feed = _engine(Changelog()), Feed()
    hosts = [f"host-{i:03d}" for i in range(200)]
    stepped: dict[str, list[int]] = defaultdict(list)
    for second in range(31):
        scrape = [feed.record(h, T0_MS + second * 1000, {"cpu": 1.0}) for h in hosts]
        for f in _decoded(engine.metrics(scrape, NOW_S), topics.FEATURES.name):
            stepped[f["entity"]].append(f["event_time"])
    after_first = Counter(t for times in stepped.values() for t in times[1:])
    assert max(after_first.values()) < 50, "at most a quarter of the fleet in one second"
    for host, times in stepped.items():
        assert times[0] == T0_MS and times[1] - times[0] <= STEP_MS
        assert all(b - a == STEP_MS for a, b in itertools.pairwise(times[1:])), host


def test_a_late_sample_is_dead_lettered_and_an_idle_partition_closes_its_step() -> None:
    engine, feed = _engine(Changelog(), allowed_lateness_s=30.0, idle_timeout_s=5.0), Feed()
    engine.metrics(_series(feed, "web-1", 20, T0_MS), NOW_S)
    late = feed.record("web-1", T0_MS, {"cpu": 1.0})
    letters = _decoded(engine.metrics([late], NOW_S), topics.DEADLETTER.name)
    assert [(d["error_kind"], d["offset"]) for d in letters] == [("late", 20)]
    quiet = engine.tick(NOW_S + 20)  # no record for 20 wall seconds: the watermark moves on
    assert [f["event_time"] for f in _decoded(quiet, topics.FEATURES.name)] == [
        T0_MS + 20 * STEP_MS
    ]


def test_one_hostile_record_is_dead_lettered_and_the_rest_flows() -> None:
    engine, feed = _engine(Changelog()), Feed()
    inputs = [
        feed.record("web-1", T0_MS, {"cpu": 1.0, "m" * 100_000: 2.0}),
        feed.record("web-2", T0_MS, {"cpu": 1.0}, labels={f"k{i}": "v" for i in range(10_000)}),
        feed.encoded("x", b"\x00not avro"),
        feed.record("web-3", T0_MS, {"cpu": 1.0}),
    ]
    out = engine.metrics(inputs, NOW_S)
    letters = _decoded(out, topics.DEADLETTER.name)
    assert [d["error_kind"] for d in letters] == ["oversized", "oversized", "unknown_schema"]
    assert "100000 characters" in letters[0]["reason"]
    assert "10000 labels" in letters[1]["reason"]
    assert {f["entity"] for f in _decoded(out, topics.FEATURES.name)} == {"web-1", "web-3"}
    assert max(len(r.value) for r in out.records) < 1_000_000


def test_a_readiness_probe_is_consumed_and_nothing_else() -> None:
    """A probe (``group_ready``'s) moves the partition's consumed offset, which is how a
    group shows it reads the partition, and writes no dead letter, state or output."""
    engine, feed = _engine(Changelog()), Feed()
    probe = feed.encoded("probe", b"", partition=3)
    out = engine.metrics([replace(probe, probe=True)], NOW_S)
    assert engine.health_fields()["consumed"] == {f"{topics.METRICS.name}:3": 0}
    assert (out.records, out.checkpoints, engine.entities) == ([], [], {})
    # The same bytes without the header are bad input like any other.
    letters = _decoded(engine.metrics([feed.encoded("probe", b"", partition=3)], NOW_S),
                       topics.DEADLETTER.name)  # fmt: skip
    assert [d["error_kind"] for d in letters] == ["undecodable"]


def test_an_output_too_large_to_produce_dead_letters_its_input() -> None:
    engine, feed = _engine(Changelog(), max_record_bytes=20_000), Feed()
    wide = {f"metric_{i:03d}_" + "x" * 200: float(i) for i in range(40)}
    inputs = [feed.record("wide", T0_MS, wide), feed.record("narrow", T0_MS, {"cpu": 1.0})]
    out = engine.metrics(inputs, NOW_S)
    letters = _decoded(out, topics.DEADLETTER.name)
    assert {(d["error_kind"], d["offset"]) for d in letters} == {("output_too_large", 0)}
    assert "FORESIGHT_MAX_RECORD_BYTES" in letters[0]["reason"]
    assert all(len(r.value) + len(r.key or b"") <= 20_000 for r in out.records)
    assert {f["entity"] for f in _decoded(out, topics.FEATURES.name)} == {"narrow"}


def test_a_failing_model_dead_letters_the_step_and_the_stream_goes_on() -> None:
    engine, feed = _engine(Changelog()), Feed()

    def broken(records: Sequence[Record]) -> tuple[FloatArray, list[list[Driver]]]:
        raise RuntimeError("model file is damaged")

    engine.batch_models = [BatchModel("failure_risk", "9", 1800, broken)]
    out = engine.metrics([feed.record("web-1", T0_MS, {"cpu": 1.0})], NOW_S)
    letters = _decoded(out, topics.DEADLETTER.name)
    assert [(d["error_kind"], d["reason"]) for d in letters] == [
        ("internal_error", "RuntimeError: model file is damaged")
    ]
    engine.batch_models = []
    later = engine.metrics([feed.record("web-1", T0_MS + STEP_MS, {"cpu": 1.0})], NOW_S)
    assert len(_decoded(later, topics.PREDICTIONS.name)) == 1


def test_past_the_entity_cap_idle_entities_leave_and_new_ones_wait() -> None:
    changelog, feed = Changelog(), Feed()
    engine = _engine(changelog, max_entities=2, entity_idle_s=600.0)
    changelog.take(engine, _series(feed, "a", 3, T0_MS), NOW_S)
    changelog.take(engine, _series(feed, "b", 3, T0_MS), NOW_S + 300)
    refused = engine.metrics([feed.record("c", T0_MS, {"cpu": 1.0})], NOW_S + 400)
    assert [d["error_kind"] for d in _decoded(refused, topics.DEADLETTER.name)] == ["entity_limit"]
    # "a" has been idle for 700 s: the next new entity takes its place, "a" goes to the
    # changelog whole (windows and models), and comes back from it.
    out = engine.metrics([feed.record("c", T0_MS, {"cpu": 1.0})], NOW_S + 700)
    changelog.write(out.checkpoints)
    assert {c.entity for c in out.checkpoints if c.models} == {"a"}
    assert set(engine.entities) == {"b", "c"}
    engine.tick(NOW_S + 1100)  # "b" idle too now
    back = engine.metrics([feed.record("a", T0_MS + 3 * STEP_MS, {"cpu": 1.0})], NOW_S + 1100)
    features = _decoded(back, topics.FEATURES.name)
    count = features[-1]["values"][vector_names(features[-1]).index("cpu:1h:count")]
    assert count == 4, "the returning entity kept its windows"


@pytest.mark.parametrize("partitions", [[(topics.METRICS.name, 0)], [(topics.METRICS.name, 1)]])
def test_a_revoked_partition_takes_its_entities_along(partitions: list[tuple[str, int]]) -> None:
    engine, feed = _engine(Changelog()), Feed()
    engine.metrics(_series(feed, "p0", 2, T0_MS, partition=0), NOW_S)
    engine.metrics(_series(feed, "p1", 2, T0_MS, partition=1), NOW_S)
    engine.revoked(partitions)
    kept = {0: {"p1"}, 1: {"p0"}}[partitions[0][1]]
    assert set(engine.entities) == kept


def test_an_entity_met_only_in_replayed_records_leaves_with_its_partition() -> None:
    changelog, feed = Changelog(), Feed()
    records = _series(feed, "web-1", 4, T0_MS)
    changelog.take(_engine(changelog), records, NOW_S)
    engine = _engine(changelog)
    engine.metrics(records[2:], NOW_S)  # restored, and both records already in its state
    engine.revoked([(topics.METRICS.name, 0)])
    # Another worker owned the partition meanwhile: the entity comes back from the table.
    elsewhere = _engine(changelog).metrics(_series(Feed(), "web-1", 8, T0_MS), NOW_S)
    changelog.write(elsewhere.checkpoints)
    newer = feed.record("web-1", T0_MS + 8 * STEP_MS, {"cpu": 1.0, "mem": 40.0})
    out = engine.metrics([Input(replace(newer.message, offset=8))], NOW_S)
    features = _decoded(out, topics.FEATURES.name)[-1]
    assert features["values"][vector_names(features).index("cpu:1h:count")] == 9


def _remote_write(decoder: RemoteWriteDecoder, feed: Feed, series: list[Series]) -> list[Input]:
    """Series through the remote_write door, as the records it produces."""
    body = snappy(write_request(series))
    return [
        feed.encoded(batch["entity"], CODEC.encode("metric_batch", batch))
        for batch in decoder.decode(body, now_ms=int(NOW_S * 1000)).batches
    ]


def test_a_node_exporter_host_through_the_door_is_modelled_as_signals() -> None:
    decoder, feed = RemoteWriteDecoder(("entity", "instance", "host", "job")), Feed()
    first = scrape(NODE_EXPORTER[0])
    # Prometheus sends each family's type in requests of their own.
    types = {s.family: TYPE_NUMBERS[s.type] for s in first if s.type in TYPE_NUMBERS}
    decoder.decode(snappy(write_request([], metadata=types)), now_ms=int(NOW_S * 1000))
    host = {"instance": "db-1:9100", "job": "node"}
    inputs = []
    for k, path in enumerate(NODE_EXPORTER):
        t_ms = T0_MS + k * STEP_MS
        series: list[Series] = [({**s.labels, **host}, [(t_ms, s.value)]) for s in scrape(path)]
        inputs += _remote_write(decoder, feed, series)
    engine = _engine(Changelog())
    out = engine.metrics(inputs, NOW_S)
    assert _decoded(out, topics.DEADLETTER.name) == []  # not one series over any limit
    pipeline = engine.entities["db-1:9100"]
    modelled = pipeline.windows.metrics
    assert len(first) == 507 and len(modelled) == 22
    capacity = dict(zip(modelled, pipeline.capacity.tolist(), strict=False))
    assert capacity['filesystem_used_fraction{mountpoint="/"}'] == 1.0  # exhaustion models on
    assert capacity["memory_used_fraction"] == 1.0
    assert math.isnan(capacity["cpu_used_fraction"])
    expected = ["memory_used_fraction", 'filesystem_used_fraction{mountpoint="/"}']
    expected += ["cpu_used_fraction", 'network_receive_bytes_per_second{device="eth0"}']
    assert set(expected) <= set(modelled)
    raw = ("node_cpu_seconds_total", "_bucket", "go_", "node_memory_", "node_filesystem_")
    assert [m for m in modelled if any(r in m for r in raw)] == []
    features = _decoded(out, topics.FEATURES.name)[-1]
    last = dict(zip(vector_names(features), features["values"], strict=True))
    assert 0.0 < last["cpu_used_fraction:1m:last"] < 1.0  # a rate, not seconds since boot
    predicted = {p["metric"] for p in prediction_rows(_decoded(out, topics.PREDICTIONS.name)[-1])}
    assert predicted <= {*modelled, "entity", ENTITY_METRIC}


def test_signals_past_the_limit_are_named_with_their_rule_and_counted() -> None:
    engine, feed = _engine(Changelog(), max_metrics_per_entity=3), Feed()
    dropped = metrics.SIGNALS_DROPPED.labels("signal_limit", "generic", "relabel")
    before = dropped._value.get()
    out = engine.metrics(
        [feed.record("app-1", T0_MS, {f"queue_{i}": 1.0 for i in range(5)})], NOW_S
    )
    (letter,) = _decoded(out, topics.DEADLETTER.name)
    assert letter["error_kind"] == "cardinality"
    assert "2 signals over the limit of 3 per entity (FORESIGHT_MAX_METRICS)" in letter["reason"]
    assert "queue_3 (generic/relabel), queue_4 (generic/relabel)" in letter["reason"]
    assert dropped._value.get() == before + 2


# -- agents and routing -----------------------------------------------------------------------


class Router:
    """Agent events and routing requests through the engine, the internal routing topic
    handed back to :meth:`Engine.route` as the worker's routing agent would."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offsets: Counter[tuple[str, int]] = Counter()

    def _input(self, topic: str, name: str, key: str, value: bytes, partition: int = 0) -> Input:
        self.offsets[name, partition] += 1
        offset = self.offsets[name, partition]
        return Input(Message(topic, partition, offset, key.encode(), value))

    def _routed(self, out: Outputs, now_s: float, partition: int = 0) -> Outputs:
        """``out``'s records of the internal topic through the routing step, as read from
        its ``partition``."""
        done = Outputs(CODEC, out.max_record_bytes)
        done.records = [r for r in out.records if r.topic != "routing-stats"]
        for record in (r for r in out.records if r.topic == "routing-stats"):
            message = self._input(
                "routing-stats", "routing", (record.key or b"").decode(), record.value, partition
            )
            done.extend(self.engine.route([message], now_s))
        return done

    def task(
        self, agent: str, task_id: str, t_ms: int, duration: float, ok: bool = True
    ) -> Outputs:
        inputs = [
            self._input(topics.AGENT_EVENTS.name, "events", agent, CODEC.encode("agent_event", {
                "agent": agent, "task_id": task_id, "task_type": "triage", "phase": phase,
                "event_time": t_ms + (int(duration) if phase != "STARTED" else 0),
                "duration_ms": None if phase == "STARTED" else duration,
            }))
            for phase in ("STARTED", "SUCCEEDED" if ok else "FAILED")
        ]  # fmt: skip
        return self._routed(self.engine.agent_events(inputs, NOW_S), NOW_S)

    def events(
        self, records: list[Record], now_s: float = NOW_S, partition: int = 0
    ) -> tuple[Outputs, Outputs]:
        """AgentEvents through the engine: what the agent step produced (the internal topic's
        records included), and what the routing step made of those (read from the internal
        topic's ``partition``)."""
        inputs = [
            self._input(topics.AGENT_EVENTS.name, "events", r["agent"],
                        CODEC.encode("agent_event", r))
            for r in records
        ]  # fmt: skip
        out = self.engine.agent_events(inputs, now_s)
        return out, self._routed(out, now_s, partition)

    def request(self, task_id: str, candidates: list[str], **fields: Any) -> Outputs:
        record = {"task_id": task_id, "task_type": "triage", "candidates": candidates,
                  "event_time": int(NOW_S * 1000), **fields}  # fmt: skip
        value = CODEC.encode("routing_request", record)
        requests = [self._input(topics.ROUTING_REQUESTS.name, "requests", task_id, value)]
        return self._routed(self.engine.routing_requests(requests, NOW_S), NOW_S)


def test_a_routing_request_is_answered_by_task_id_with_the_learned_choice() -> None:
    router = Router(_engine(Changelog()))
    for i in range(30):
        router.task("fast", f"f{i}", T0_MS + i * 10_000, 1_000.0)
        router.task("slow", f"s{i}", T0_MS + i * 10_000, 5_000.0)
    out = router.request("t-1", ["fast", "slow"], deadline=int(NOW_S * 1000) + 60_000, priority=2)
    decisions = [(r.key, CODEC.decode(r.value)[1]) for r in out.records]
    assert [key for key, _ in decisions] == [b"t-1"]
    decision = decisions[0][1]
    assert (decision["task_id"], decision["agent"], decision["runner_up"]) == (
        "t-1",
        "fast",
        "slow",
    )
    assert (
        decision["duration_lower_ms"]
        < decision["expected_duration_ms"]
        < decision["duration_upper_ms"]
    )
    assert decision["priority"] == 2 and decision["deadline_miss_probability"] < 0.01
    assert decision["reason"].startswith("fast: expected")


def test_a_request_routed_here_is_decided_at_once_as_through_the_internal_topic() -> None:
    through, here = Router(_engine(Changelog())), Router(_engine(Changelog()))
    for router in (through, here):
        for i in range(30):
            router.task("fast", f"f{i}", T0_MS + i * 10_000, 1_000.0)
            router.task("slow", f"s{i}", T0_MS + i * 10_000, 5_000.0)
    routed = through.request("t-1", ["fast", "slow"], priority=2)
    direct_out = here.engine.routing_requests(
        [here._input(topics.ROUTING_REQUESTS.name, "requests", "t-1", CODEC.encode(
            "routing_request", {"task_id": "t-1", "task_type": "triage",
                                "candidates": ["fast", "slow"], "priority": 2,
                                "event_time": int(NOW_S * 1000)}))],
        NOW_S,
        lambda task_type: task_type == b"triage",
    )  # fmt: skip
    assert [r.topic for r in direct_out.records] == [topics.ROUTING.name], "no internal hop"
    direct = direct_out.records[0]
    assert direct.key == routed.records[0].key == b"t-1"
    assert CODEC.decode(direct.value) == CODEC.decode(routed.records[0].value)
    assert direct.cause is not None and direct.cause.topic == topics.ROUTING_REQUESTS.name


def test_a_request_nobody_can_take_is_a_dead_letter_that_names_it_either_way() -> None:
    """No candidates and no agent known for the task type: refused with the reason, and
    ``routed_request`` finds the request in the letter whether it was decided at once or
    through the internal topic (``POST /v1/route`` answers 422 with it)."""
    through, here = Router(_engine(Changelog())), Router(_engine(Changelog()))
    request = {"task_id": "t-9", "task_type": "triage", "candidates": [],
               "event_time": int(NOW_S * 1000)}  # fmt: skip
    value = CODEC.encode("routing_request", request)
    outs = [
        through.request("t-9", []),
        here.engine.routing_requests(
            [here._input(topics.ROUTING_REQUESTS.name, "requests", "t-9", value)],
            NOW_S,
            lambda task_type: True,
        ),
    ]
    for out in outs:
        assert [r.topic for r in out.records] == [topics.DEADLETTER.name]
        letter = CODEC.decode(out.records[0].value)[1]
        assert "no candidates for task type 'triage'" in letter["reason"]
        assert routed_request(letter["value"], CODEC)["task_id"] == "t-9"  # type: ignore[index]
    event = {"agent": "a", "task_id": "t-9", "task_type": "triage", "phase": "STARTED",
             "event_time": int(NOW_S * 1000), "duration_ms": None}  # fmt: skip
    assert routed_request(CODEC.encode("agent_event", event), CODEC) is None
    assert routed_request(b'{"kind": "loads"}', CODEC) is None
    assert routed_request(b"\xff not a record", CODEC) is None


def test_routing_weighs_an_agents_load_and_follows_its_outcomes() -> None:
    router = Router(_engine(Changelog()))
    for i in range(30):
        router.task("fast", f"f{i}", T0_MS + i * 10_000, 1_000.0)
        router.task("slow", f"s{i}", T0_MS + i * 10_000, 3_000.0)
    chosen = [CODEC.decode(r.value)[1]["agent"] for n in range(6)
              for r in router.request(f"burst-{n}", ["fast", "slow"]).records]  # fmt: skip
    assert "slow" in chosen, "decided tasks weigh on the fast agent until they start"
    for i in range(30, 60):  # the fast agent degrades
        router.task("fast", f"f{i}", T0_MS + i * 10_000, 20_000.0)
    decision = CODEC.decode(router.request("after", []).records[0].value)[1]
    assert decision["agent"] == "slow"


def _workflow_events(
    workflow: str, path: tuple[str, ...], t_ms: int, end: str | None = "SUCCEEDED"
) -> list[Record]:
    """A release workflow's AgentEvents, one every 10 s: its root, its steps (started and
    succeeded), and its root's ``end`` (None: not yet)."""
    base: Record = {"workflow_id": workflow, "duration_ms": None, "parent_task_id": f"{workflow}-r"}
    root = base | {"agent": "orchestrator", "task_id": f"{workflow}-r", "task_type": "release",
                   "parent_task_id": None}  # fmt: skip
    events: list[Record] = [root | {"phase": "STARTED"}]
    for step, task_type in enumerate(path, start=1):
        task = base | {"agent": f"agent-{step}", "task_id": f"{workflow}-{step}",
                       "task_type": task_type, "step": step}  # fmt: skip
        events += [task | {"phase": "STARTED"}, task | {"phase": "SUCCEEDED", "duration_ms": 9.0}]
    if end is not None:
        events.append(root | {"phase": end})
    return [e | {"event_time": t_ms + i * 10_000} for i, e in enumerate(events)]


def test_a_workflows_events_reach_one_routing_step_and_its_pattern_alerts_come_out() -> None:
    router = Router(_engine(Changelog()))
    agent_step, routed = router.events(
        _workflow_events("wf-1", ("plan", "test", "test", "test"), T0_MS, end=None)
    )
    internal = [r for r in agent_step.records if r.topic == "routing-stats"]
    followed = [r.key for r in internal if json.loads(r.value)["kind"] == "workflow"]
    assert followed == [b"wf-1"] * 9
    (alert,) = _decoded(routed, topics.ALERTS.name)
    assert (alert["rule"], alert["entity"], alert["status"]) == ("workflow_loop", "wf-1", "FIRING")
    assert alert["labels"]["path"] == "plan → test → test → test"
    assert (alert["labels"]["cycle"], alert["labels"]["repeats"]) == ("test", "3")
    assert router.engine.health_fields()["workflows"] == 1
    _, ended = router.events([_workflow_events("wf-1", (), T0_MS + 100_000)[-1]])
    assert _decoded(ended, topics.ALERTS.name) == []  # its end waits for late steps, then:
    (resolved,) = _decoded(router.engine.tick(NOW_S + 10), topics.ALERTS.name)
    assert (resolved["status"], resolved["labels"]["outcome"]) == ("RESOLVED", "SUCCEEDED")


def test_a_stalled_workflow_is_flagged_by_the_clock_when_its_events_stop() -> None:
    engine = _engine(Changelog())
    router = Router(engine)
    for n in range(50):
        router.events(_workflow_events(f"wf-{n}", ("plan", "test"), T0_MS + n * 60_000))
    router.events(_workflow_events("stuck", ("plan", "test"), T0_MS + 3_600_000, end=None))
    quiet_since_s = NOW_S  # the routing step last heard of a workflow now
    assert _decoded(engine.tick(quiet_since_s + 30), topics.ALERTS.name) == []
    (alert,) = _decoded(engine.tick(quiet_since_s + 120), topics.ALERTS.name)
    assert (alert["rule"], alert["entity"]) == ("workflow_stall", "stuck")
    assert alert["labels"]["stall_after_s"] == "60"


def test_workflows_read_behind_on_one_partition_are_not_stalled_by_anothers_clock() -> None:
    """The routing step reads its partitions unevenly (a worker behind, a rebalance): the
    workflows of the partition behind are judged by event time that partition has reached."""
    engine = _engine(Changelog())
    router = Router(engine)
    for n in range(50):
        router.events(_workflow_events(f"wf-{n}", ("plan", "test"), T0_MS + n * 60_000))
    router.events(_workflow_events("behind", ("plan",), T0_MS + 3_000_000, end=None))
    _, ahead = router.events(
        _workflow_events("ahead", ("plan", "test"), T0_MS + 3_600_000), partition=1
    )
    assert _decoded(ahead, topics.ALERTS.name) == []
    assert _decoded(engine.tick(NOW_S + 1), topics.ALERTS.name) == []
    _, caught_up = router.events(
        _workflow_events("behind", ("plan", "test"), T0_MS + 3_000_000)[3:]
    )
    assert _decoded(caught_up, topics.ALERTS.name) == []


def test_a_request_the_engine_cannot_answer_is_dead_lettered_with_its_reason() -> None:
    router = Router(_engine(Changelog()))
    out = router.request("t-2", [])
    letters = _decoded(out, topics.DEADLETTER.name)
    assert [letter["error_kind"] for letter in letters] == ["invalid_value"]
    assert "name the candidates" in letters[0]["reason"]
    bad = router.request("", ["a"])
    assert [letter["reason"] for letter in _decoded(bad, topics.DEADLETTER.name)] == [
        "task_id is empty"
    ]


def test_a_pool_gets_scaling_advice_as_a_prediction_once_a_minute() -> None:
    router = Router(_engine(Changelog()))

    def advice(out: Outputs) -> list[Record]:
        batches = _decoded(out, topics.PREDICTIONS.name)
        return [b for b in batches if b["entity"] == "pool:triage"]

    first = advice(router.task("a1", "x", T0_MS, 1_000.0))
    assert [(p["kind"], p["metric"], p["value"]) for p in prediction_rows(first[0])] == [
        ("SCALING", "triage", 0.0)
    ]
    assert not advice(router.task("a1", "y", T0_MS + 10_000, 1_000.0))
    assert advice(router.task("a1", "z", T0_MS + 70_000, 1_000.0))


def _cpu(vectors: Sequence[Record]) -> FloatArray:
    rows = [dict(zip(vector_names(v), v["values"], strict=True)) for v in vectors]
    return np.array([[row.get("cpu:1m:mean", np.nan)] for row in rows])


def _watch(version: str, content_hash: str, reference: FeatureReference) -> FeatureDriftWatch:
    return FeatureDriftWatch(
        "failure_risk", version, content_hash, ["cpu:1m:mean"], reference, _cpu, window=40
    )


def _cpu_steps(feed: Feed, steps: range, level: float, seed: int) -> list[Input]:
    rng = np.random.default_rng(seed)
    return [feed.record(f"h{i}", T0_MS + k * STEP_MS, {"cpu": level + rng.normal(0, 5)})
            for k in steps for i in range(4)]  # fmt: skip


def test_the_production_models_feature_drift_raises_a_drift_alert() -> None:
    training = _engine(Changelog()).metrics(_cpu_steps(Feed(), range(60), 50.0, 1), NOW_S)
    reference = FeatureReference.fit(_cpu(_decoded(training, topics.FEATURES.name)))
    engine, feed = _engine(Changelog()), Feed()
    engine.serve([], _watch("3", "hash-3", reference))
    engine.metrics(_cpu_steps(feed, range(60), 50.0, 2), NOW_S)
    assert _decoded(engine.watch_drift(int(NOW_S * 1000)), topics.ALERTS.name) == []
    engine.metrics(_cpu_steps(feed, range(60, 120), 90.0, 3), NOW_S)
    (alert,) = _decoded(engine.watch_drift(int(NOW_S * 1000) + 60_000), topics.ALERTS.name)
    assert (alert["rule"], alert["status"], alert["entity"]) == (
        "model_drift", "FIRING", "model/failure_risk",
    )  # fmt: skip
    assert alert["labels"]["version"] == "3" and alert["labels"]["content_hash"] == "hash-3"
    assert alert["labels"]["metric"] == "cpu:1m:mean" and alert["labels"]["retrain"] == "true"

    engine.serve([], _watch("4", "hash-4", reference))  # version 4 promoted meanwhile
    (ended,) = _decoded(engine.watch_drift(int(NOW_S * 1000) + 120_000), topics.ALERTS.name)
    assert (ended["status"], ended["alert_id"]) == ("RESOLVED", alert["alert_id"])
    assert ended["labels"]["content_hash"] == "hash-3"
    assert _decoded(engine.watch_drift(int(NOW_S * 1000) + 180_000), topics.ALERTS.name) == []


def test_a_reload_keeps_the_watch_of_the_same_version_and_replaces_another() -> None:
    engine, reference = _engine(Changelog()), FeatureReference.fit(np.ones((10, 1)))
    first = _watch("3", "hash-3", reference)
    engine.serve([], first)
    engine.serve([], _watch("3", "hash-3", reference))  # a candidate came: production is the same
    assert engine.feature_drift is first
    engine.serve([], _watch("4", "hash-4", reference))
    assert engine.feature_drift is not first and engine.feature_drift is not None
    assert engine.feature_drift.version == "4"
    engine.serve([], None)
    assert engine.feature_drift is None


def test_each_arm_of_an_a_b_split_is_counted_by_its_version() -> None:
    engine, feed = _engine(Changelog()), Feed()
    arms = TrafficSplit({"8": 40.0}).arms("7")

    def constant(
        risk: float,
    ) -> Callable[[Sequence[Record]], tuple[FloatArray, list[list[Driver]]]]:
        return lambda vectors: (np.full(len(vectors), risk), [[] for _ in vectors])

    model = f"failure_risk_ab_{uuid.uuid4().hex[:8]}"  # counters are process-wide
    engine.serve(
        [BatchModel(model, "7", 1800, constant(0.1), arm=arms["7"]),
         BatchModel(model, "8", 1800, constant(0.9), arm=arms["8"])],
        None,
    )  # fmt: skip
    entities = [f"web-{i}" for i in range(40)]
    engine.metrics([feed.record(e, T0_MS, {"cpu": 1.0}) for e in entities], NOW_S)
    in_arm = {v: sum(serving(arms, e) == v for e in entities) for v in ("7", "8")}
    assert in_arm["7"] and in_arm["8"]

    def sample(name: str, version: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"model": model, "version": version})

    for version, alarms in (("7", 0), ("8", in_arm["8"])):
        assert sample("foresight_model_predictions_total", version) == in_arm[version]
        assert (sample("foresight_model_alarms_total", version) or 0.0) == alarms
    assert sample("foresight_model_traffic_share", "8") == pytest.approx(0.4)
    assert sample("foresight_model_traffic_share", "7") == pytest.approx(0.6)
