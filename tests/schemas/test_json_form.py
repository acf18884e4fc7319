"""The JSON form of records and its JSON Schema, both derived from the Avro schemas."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest

from schemas.codec import SCHEMA_NAMES
from schemas.json_form import (
    TWINNED,
    json_form,
    json_schema,
    json_schema_text,
    shipped_json_schema,
)
from tests.schemas.samples import SAMPLES


@pytest.mark.parametrize("name", TWINNED)
def test_the_shipped_json_schemas_are_the_generated_ones(name: str) -> None:
    assert shipped_json_schema(name) == json_schema_text(name), (
        f"schemas/json/{name}.schema.json is stale: run `python -c 'from schemas.json_form "
        "import write_json_schemas; write_json_schemas()'`"
    )


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES))
def test_every_record_has_a_json_form_that_its_json_schema_accepts(name: str) -> None:
    form = json_form(name)(SAMPLES[name])
    jsonschema.Draft202012Validator.check_schema(json_schema(name))
    jsonschema.validate(form, json_schema(name))
    assert json.loads(json.dumps(form, allow_nan=False)) == form


def test_non_finite_numbers_become_null_and_arrays_may_be_numpy() -> None:
    batch = dict(
        SAMPLES["prediction_batch"],
        values=np.array([math.inf]),
        lowers=np.array([math.nan]),
        latency_ms=math.nan,
    )
    form = json_form("prediction_batch")(batch)
    assert (form["values"], form["lowers"], form["latency_ms"]) == ([None], [None], None)
    assert form["kinds"] == ["FORECAST"] and form["event_time"] == batch["event_time"]
    jsonschema.validate(form, json_schema("prediction_batch"))


def test_a_record_missing_a_field_without_default_is_refused() -> None:
    incomplete = {k: v for k, v in SAMPLES["alert"].items() if k != "entity"}
    with pytest.raises(KeyError, match="entity"):
        json_form("alert")(incomplete)


def test_a_wrong_type_fails_the_json_schema() -> None:
    form = json_form("alert")(SAMPLES["alert"])
    with pytest.raises(jsonschema.ValidationError, match="not of type 'string'"):
        jsonschema.validate({**form, "entity": 7}, json_schema("alert"))
