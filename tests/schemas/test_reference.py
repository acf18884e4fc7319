"""The README publishes the records subscribers read; it must say what the schemas say."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.reference import avro_type, field_table

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    "name",
    ["prediction_batch", "feature_vector", "alert", "routing_decision", "code_quality_snapshot"],
)
def test_the_readme_shows_each_published_record_as_its_schema_has_it(name: str) -> None:
    assert field_table(name) in README.read_text(), (
        f"README's table of {name} is stale: paste `python -c 'from schemas.reference import "
        f'field_table; print(field_table("{name}"))\'`'
    )


def test_types_read_as_short_phrases() -> None:
    assert avro_type(["null", {"type": "long", "logicalType": "timestamp-millis"}]) == (
        "null \\| timestamp-millis"
    )
    assert avro_type({"type": "array", "items": "io.foresight.PredictionKind"}) == (
        "array<PredictionKind>"
    )
    assert avro_type({"type": "map", "values": "string"}) == "map<string>"
