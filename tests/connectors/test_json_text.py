"""The one JSON writer of the API's answers and the live feed."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from pydantic_core import to_json

from connectors.json_text import dumps
from connectors.live_feed import to_json as feed_text


def _strict(text: bytes | str) -> object:
    """Parsed as a browser parses JSON: NaN and Infinity are errors."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_at_any_depth() -> None:
    payload = {
        "value": math.nan,
        "rows": [{"upper": math.inf, "lower": -math.inf, "drivers": [{"v": np.float64("nan")}]}],
        "series": np.array([1.5, np.nan]),
    }
    assert _strict(dumps(payload)) == {
        "value": None,
        "rows": [{"upper": None, "lower": None, "drivers": [{"v": None}]}],
        "series": [1.5, None],
    }
    assert _strict(feed_text(payload)) == _strict(dumps(payload))


def test_the_bytes_are_pydantics_for_the_api_answers_records() -> None:
    rng = np.random.default_rng(3)
    answer = {
        "entity": "host-01",
        "source": "online",
        "event_time": 1_796_172_139_546,
        "predictions": [
            {
                "kind": "FORECAST",
                "metric": f"m{i}",
                "horizon_s": 3600,
                "value": float(v),
                "score": None,
                "lower": math.nan if i % 3 == 0 else float(v) - 1,
                "upper": float(v) * 1e300 if i % 5 == 0 else float(v) + 0.1,
                "model": {"name": "seasonal_forecaster", "version": "2"},
                "shadow": False,
                "drivers": [{"feature": f"m{i}:5m:mean", "value": -0.0, "contribution": 1e-7}],
            }
            for i, v in enumerate(rng.normal(50, 20, 200))
        ],
    }
    assert dumps(answer) == to_json(answer, inf_nan_mode="null")


def test_types_orjson_does_not_know_are_converted_as_pydantic_converts_them() -> None:
    @dataclasses.dataclass
    class Point:
        at: int
        value: float

    assert _strict(dumps({"raw": b"ok", "point": Point(1, math.inf), "n": np.int64(7)})) == {
        "raw": "ok",
        "point": {"at": 1, "value": None},
        "n": 7,
    }
    with pytest.raises(TypeError):
        dumps({"handle": object()})
    with pytest.raises(TypeError):  # keys are strings: Avro maps' and the answers' own
        dumps({1: "one"})


def test_indented_for_a_person_the_same_document() -> None:
    payload = [{"value": math.nan, "name": "é", "nested": {"at": [1, 2.5]}}]
    text = dumps(payload, indent=True).decode()
    assert text.splitlines()[1] == "  {"
    assert (
        json.loads(text)
        == json.loads(dumps(payload))
        == [{"value": None, "name": "é", "nested": {"at": [1, 2.5]}}]
    )
