"""Every schema stays backward compatible with each of its committed versions."""

from __future__ import annotations

import copy
import io

import fastavro
import pytest

from schemas.codec import SCHEMA_NAMES, Codec, _parse, current_schema, schema_history
from schemas.compatibility import backward_problems
from tests.schemas.samples import SAMPLES


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_current_version_is_frozen_in_history(name: str) -> None:
    current = current_schema(name)
    history = schema_history(name)
    assert current.version in history, (
        f"{name} v{current.version} has no copy in schemas/avro/history: "
        "copy the new version there when you bump it"
    )
    assert history[current.version].canonical() == current.canonical(), (
        f"{name}.avsc changed but its foresight.version was not bumped"
    )


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_backward_compatible_with_every_previous_version(name: str) -> None:
    current = current_schema(name)
    for version, old in schema_history(name).items():
        assert backward_problems(current.raw, old.raw) == [], f"{name} v{version}"


def test_checker_rejects_a_new_field_without_default() -> None:
    old = current_schema("label").raw
    new = copy.deepcopy(old)
    new["fields"].append({"name": "severity", "type": "string", "doc": "x"})
    assert backward_problems(new, old) == ["Label.severity: new field without a default"]


def test_checker_rejects_a_changed_type_and_a_lost_enum_symbol() -> None:
    old = current_schema("agent_event").raw
    new = copy.deepcopy(old)
    new["fields"][0]["type"] = "int"
    new["fields"][3]["type"]["symbols"] = ["STARTED", "SUCCEEDED"]
    problems = backward_problems(new, old)
    assert any("agent: type changed from string to int" in p for p in problems)
    assert any("enum lost symbols ['FAILED']" in p for p in problems)


def test_data_written_by_an_old_version_decodes_into_the_current_one() -> None:
    old_raw = copy.deepcopy(current_schema("label").raw)
    old_raw["fields"] = [f for f in old_raw["fields"] if f["name"] != "description"]
    new_raw = current_schema("label").raw
    assert backward_problems(new_raw, old_raw) == []
    old = _parse("label", old_raw)
    record = {k: v for k, v in SAMPLES["label"].items() if k != "description"}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, old.parsed, record)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, old.parsed, current_schema("label").parsed)
    assert isinstance(decoded, dict)
    assert decoded["description"] == ""
    assert Codec().decode(Codec().encode("label", decoded))[1] == decoded


def test_an_agent_event_of_version_1_decodes_with_no_workflow() -> None:
    old = schema_history("agent_event")[1]
    record = {k: v for k, v in SAMPLES["agent_event"].items()
              if k not in ("workflow_id", "parent_task_id", "step")}  # fmt: skip
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, old.parsed, record)
    frame = bytes([0xF5, len(b"agent_event")]) + b"agent_event" + (1).to_bytes(2, "big")
    name, decoded = Codec().decode(frame + buffer.getvalue())
    assert name == "agent_event"
    assert decoded == record | {"workflow_id": None, "parent_task_id": None, "step": None}
