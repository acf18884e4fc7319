"""``foresight tail``'s lines: a person reads what drove a prediction beside it."""

from __future__ import annotations

from schemas.predictions import PredictionColumns
from streams.commands.tail import prediction_line
from tests.schemas.samples import SAMPLES


def test_a_prediction_line_shows_its_drivers() -> None:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("detector", "2"), ["cpu"], [0], [97.0], [0.4])
    at = columns.add("FAILURE_RISK", ("failure_risk", "3"), ["entity"], [1800], [0.9], [0.9])
    columns.explain(at, [("mem:15m:slope", 0.31), ("cpu:1m:last", -0.05)])
    line = prediction_line({**SAMPLES["prediction_batch"], **columns.record()})
    assert line.endswith(
        "ANOMALY cpu=97 score=0.4; "
        "FAILURE_RISK entity=0.9 score=0.9 +1800s [mem:15m:slope +0.31, cpu:1m:last -0.05]"
    )
