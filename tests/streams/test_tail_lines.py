"""``foresight tail``'s lines: a person reads what drove a prediction beside it."""

from __future__ import annotations

from schemas.field_rules import one_line
from schemas.predictions import PredictionColumns
from streams.commands.tail import alert_line, prediction_line
from tests.schemas.samples import SAMPLES


def test_a_prediction_line_shows_its_drivers() -> None:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("detector", "2"), ["cpu"], [0], [97.0], [0.4])
    at = columns.add("FAILURE_RISK", ("failure_risk", "3"), ["entity"], [1800], [0.9], [0.9])
    columns.explain(at, [("mem:15m:slope", 0.31), ("cpu:1m:last", -0.05)])
    columns.add("DURATION", ("agent_stats", "1"), ["summarise"], [0], [12_370.0], [0.09])
    line = prediction_line({**SAMPLES["prediction_batch"], **columns.record()})
    assert line.endswith(
        "ANOMALY cpu=97 score=0.4; "
        "FAILURE_RISK entity=0.9 score=0.9 +1800s [mem:15m:slope +0.31, cpu:1m:last -0.05]; "
        "DURATION summarise=12.37s score=0.09"
    )


def test_an_alert_written_by_anyone_shows_as_one_line_that_leaves_the_terminal_alone() -> None:
    """Records on the topic may predate the worker's checks or come from another producer."""
    alert = dict(SAMPLES["alert"], entity="web-1\n2026 db-1 FIRING", summary="cpu\x1b[2J\x1b[31m")
    shown = one_line(alert_line(alert))
    assert "\n" not in shown and "\x1b" not in shown
    assert "web-1\\n2026 db-1 FIRING" in shown and "cpu\\x1b[2J\\x1b[31m" in shown
