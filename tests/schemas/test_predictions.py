"""The columnar PredictionBatch: built once, read the same whatever version wrote it."""

from __future__ import annotations

import io
import math
import struct

import fastavro

from models.features import feature_names, vector_names
from schemas.codec import FORESIGHT_MAGIC, Codec, schema_history
from schemas.predictions import PredictionColumns, as_rows, prediction_count, prediction_rows
from tests.schemas.samples import SAMPLES, V1_SAMPLES


def test_worst_ranks_metrics_for_agreement_rules() -> None:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("m", "1"), ["cpu", "latency", "disk"], [0, 0, 0], [1, 2, 3],
                [0.95, 0.91, math.nan])  # fmt: skip
    columns.add("FORECAST", ("f", "1"), ["cpu"], [300], [5.0], [1.0], [4.0], [6.0])
    assert columns.worst("ANOMALY") == (0.95, "cpu")
    assert columns.worst("ANOMALY", rank=2) == (0.91, "latency")
    assert columns.worst("ANOMALY", rank=3) == (0.0, "")


def test_names_are_sent_once_and_rows_come_back_whole() -> None:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("detector", "2"), ["cpu", "mem"], [0, 0], [12.0, 40.0], [0.1, 0.2])
    columns.add("FORECAST", ("forecaster", "1"), ["cpu", "cpu"], [300, 3600], [13.0, 14.0],
                [0.0, 0.0], [10.0, 9.0], [16.0, math.nan])  # fmt: skip
    record = columns.record()
    assert record["metrics"] == ["cpu", "mem"]
    assert record["models"] == ["detector", "forecaster"]
    assert record["metric_index"] == [0, 1, 0, 0]
    rows = prediction_rows(record)
    assert rows[3] == {"metric": "cpu", "kind": "FORECAST", "model": "forecaster",
                       "model_version": "1", "horizon_s": 3600, "value": 14.0, "score": 0.0,
                       "lower": 9.0, "upper": None, "drivers": []}  # fmt: skip
    assert prediction_count(record) == 4


def _written_by_version_1(name: str) -> bytes:
    """A record as version 1 of schema ``name`` framed and wrote it."""
    buffer = io.BytesIO()
    buffer.write(bytes([FORESIGHT_MAGIC, len(name)]) + name.encode() + struct.pack(">H", 1))
    fastavro.schemaless_writer(buffer, schema_history(name)[1].parsed, V1_SAMPLES[name])
    return buffer.getvalue()


def test_version_1_data_reads_as_the_same_rows() -> None:
    codec = Codec()
    _, current = codec.decode(codec.encode("prediction_batch", SAMPLES["prediction_batch"]))
    _, old = codec.decode(_written_by_version_1("prediction_batch"))
    assert old["kinds"] == [] and old["predictions"]
    expected = [{**p, "drivers": []} for p in V1_SAMPLES["prediction_batch"]["predictions"]]
    assert prediction_rows(old) == prediction_rows(current) == expected
    for batch in (old, current):
        shaped = as_rows(batch)
        assert "kinds" not in shaped and "metrics" not in shaped
        assert shaped["predictions"] == expected


def _explained() -> dict[str, object]:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("detector", "2"), ["cpu", "mem"], [0, 0], [12.0, 40.0], [0.1, 0.2])
    at = columns.add("FAILURE_RISK", ("failure_risk", "3"), ["entity"], [1800], [0.9], [0.9])
    columns.explain(at, [("mem:15m:slope", 0.31), ("cpu:1m:last", -0.05)])
    entity = columns.add("ANOMALY", ("entity_anomaly", "1"), ["*"], [0], [0.7], [0.7])
    columns.explain(entity, [("mem", 0.6)])
    return {**SAMPLES["prediction_batch"], **columns.record()}


def test_drivers_ride_with_the_prediction_they_explain() -> None:
    _, batch = Codec().decode(Codec().encode("prediction_batch", _explained()))
    rows = prediction_rows(batch)
    assert [r["drivers"] for r in rows] == [
        [],
        [],
        [{"feature": "mem:15m:slope", "contribution": 0.31},
         {"feature": "cpu:1m:last", "contribution": -0.05}],
        [{"feature": "mem", "contribution": 0.6}],
    ]  # fmt: skip
    columns = PredictionColumns.of(batch)
    assert columns.drivers_of(columns.worst_at("FAILURE_RISK")) == [
        ("mem:15m:slope", 0.31), ("cpu:1m:last", -0.05)
    ]  # fmt: skip
    assert "driver_of" not in as_rows(batch)


def test_readers_of_versions_1_to_3_read_a_version_4_batch() -> None:
    body = io.BytesIO()
    current = schema_history("prediction_batch")[4]
    fastavro.schemaless_writer(body, current.parsed, _explained())
    for version in (1, 2, 3):
        body.seek(0)
        old = schema_history("prediction_batch")[version].parsed
        read = fastavro.schemaless_reader(body, current.parsed, old)
        assert isinstance(read, dict) and "driver_of" not in read
        if version == 1:  # its list is empty since version 2: the predictions are columns
            assert read["predictions"] == [] and read["entity"] == "web-1"
        else:
            assert [r["score"] for r in prediction_rows(read)] == [0.1, 0.2, 0.9, 0.7]


def test_feature_vectors_of_either_version_name_the_same_features() -> None:
    codec = Codec()
    _, current = codec.decode(codec.encode("feature_vector", SAMPLES["feature_vector"]))
    _, old = codec.decode(_written_by_version_1("feature_vector"))
    assert current["names"] == [] and current["metrics"] == ["cpu_percent"]
    assert vector_names(current) == feature_names(["cpu_percent"])
    assert len(vector_names(current)) == len(current["values"])
    assert vector_names(old) == V1_SAMPLES["feature_vector"]["names"]
