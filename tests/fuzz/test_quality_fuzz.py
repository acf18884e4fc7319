"""Both doors of code-quality snapshots under hostile input.

``POST /api/v1/quality``'s rules take any decoded JSON value and give records the schema takes
or the list of what is wrong; the quality processor takes any bytes and any record that fits
the schema and gives forecasts, alerts or a dead letter with its reason, never an
``internal_error`` (its last resort, and a fuzz failure here).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from connectors.ingest_http import validate_snapshots
from schemas.codec import Codec, Message
from streams import topics
from streams.engine import Input
from streams.quality import QualityProcessor
from streams.settings import Settings
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import NOW_MS, mutated, quality_snapshots
from tests.fuzz.test_json_doors_fuzz import json_values
from tests.schemas.samples import SAMPLES

CODEC = Codec()
SAMPLE = CODEC.encode("code_quality_snapshot", SAMPLES["code_quality_snapshot"])


@st.composite
def snapshot_like(draw: st.DrawFn) -> dict[str, Any]:
    """A snapshot with some fields replaced by any JSON value, removed, or added."""
    record: dict[str, Any] = draw(quality_snapshots())
    for field in draw(st.sets(st.sampled_from(sorted(record)), max_size=3)):
        if draw(st.booleans()):
            del record[field]
        else:
            record[field] = draw(json_values)
    return record


@fuzz(300)
@given(st.one_of(json_values, snapshot_like(), st.lists(snapshot_like(), max_size=4)))
@example({"repository": "r", "commit": "c", "event_time": 1, "files": 10**30, "lines": 1,
          "functions": 1, "mean_complexity": 1, "max_complexity": 1})  # fmt: skip
def test_any_json_gives_snapshots_or_every_problem(payload: Any) -> None:
    records, errors = validate_snapshots(payload, NOW_MS)
    if errors:
        event("refused")
        for error in errors:
            assert error.reason and json.dumps(error.as_dict())
        return
    event("accepted")
    for record in records:
        CODEC.encode("code_quality_snapshot", record)  # what the rules accept, the schema takes


@fuzz(150)
@given(st.lists(st.one_of(quality_snapshots().map(lambda r: CODEC.encode(
    "code_quality_snapshot", r)), mutated(SAMPLE)), min_size=1, max_size=15))  # fmt: skip
def test_the_processor_answers_every_record(values: list[bytes]) -> None:
    processor = QualityProcessor(Settings(quality_max_repositories=2), CODEC)
    inputs = [
        Input(Message(topics.QUALITY.name, 0, offset, b"k", value))
        for offset, value in enumerate(values)
    ]
    out = processor.process(inputs, NOW_MS / 1000)
    letters = [CODEC.decode(r.value)[1] for r in out.records if r.topic == topics.DEADLETTER.name]
    assert all(letter["error_kind"] != "internal_error" for letter in letters), letters
    for letter in letters:
        event(f"dead letter: {letter['error_kind']}")
