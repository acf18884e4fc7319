"""Both doors of code-quality snapshots under hostile input.

``POST /api/v1/quality``'s rules take any decoded JSON value and give records the schema takes
or the list of what is wrong; the quality processor takes any bytes and any record that fits
the schema and gives forecasts, alerts or a dead letter with its reason, never an
``internal_error`` (its last resort, and a fuzz failure here).
"""

from __future__ import annotations

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
from tests.fuzz.test_json_doors_fuzz import json_values, records_or_every_problem, spoiled
from tests.schemas.samples import SAMPLES

CODEC = Codec()
SAMPLE = CODEC.encode("code_quality_snapshot", SAMPLES["code_quality_snapshot"])


snapshot_like = spoiled(quality_snapshots())


@fuzz(300)
@given(st.one_of(json_values, snapshot_like, st.lists(snapshot_like, max_size=4)))
@example({"repository": "r", "commit": "c", "event_time": 1, "files": 10**30, "lines": 1,
          "functions": 1, "mean_complexity": 1, "max_complexity": 1})  # fmt: skip
def test_any_json_gives_snapshots_or_every_problem(payload: Any) -> None:
    records_or_every_problem(validate_snapshots, "code_quality_snapshot", payload)


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
