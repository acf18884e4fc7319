"""NAB scoring rules on tiny hand-made files whose rewards are computed by hand."""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from models.anomaly import StreamingAnomalyDetector
from models.base import score_series
from models.nab import (
    PROFILES,
    LabelledScores,
    benchmark,
    optimise_threshold,
    probation_rows,
    read_series,
    scaled_sigmoid,
    score_files,
    score_together,
    window_rows,
)

STANDARD = PROFILES["standard"]
N = 200  # probation: the first 30 rows
WINDOW = (100, 119)  # 20 rows


def _sigma(position: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def _detections(*rows: int, n: int = N) -> LabelledScores:
    scores = np.zeros(n)
    scores[list(rows)] = 1.0
    return LabelledScores("f.csv", scores, [WINDOW])


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert probation_rows(200) == 30
    assert probation_rows(4033) == 604
    assert probation_rows(22696) == 750


def test_scaled_sigmoid_matches_the_published_curve() -> None:
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(3.0)) == -1.0


def test_detection_at_window_start_earns_a_tp() -> None:
    total = score_files([_detections(100)], STANDARD, threshold=0.5)[0]
    assert total == pytest.approx(STANDARD.a_tp)


def test_earlier_detection_earns_more_and_only_the_first_counts() -> None:
    early = score_files([_detections(100)], STANDARD, 0.5)[0]
    late = score_files([_detections(119)], STANDARD, 0.5)[0]
    assert late == pytest.approx(_sigma(-1 / 20) / _sigma(-1.0))
    assert early > late
    both = score_files([_detections(105, 119)], STANDARD, 0.5)[0]
    assert both == pytest.approx(_sigma(-15 / 20) / _sigma(-1.0))


def test_missed_window_costs_a_fn_in_every_profile() -> None:
    for profile in PROFILES.values():
        assert score_files([_detections()], profile, 0.5)[0] == -profile.a_fn


def test_false_positive_cost_depends_on_the_preceding_window() -> None:
    before_any = score_files([_detections(100, 50)], STANDARD, 0.5)[0]
    assert before_any == pytest.approx(1.0 - STANDARD.a_fp)
    just_after = score_files([_detections(100, 121)], STANDARD, 0.5)[0]
    assert just_after == pytest.approx(1.0 + _sigma(2 / 19) * STANDARD.a_fp)
    far_after = score_files([_detections(100, 190)], STANDARD, 0.5)[0]
    assert far_after == pytest.approx(1.0 - STANDARD.a_fp)
    assert before_any < just_after


def test_probationary_rows_are_not_scored() -> None:
    assert score_files([_detections(100, 10)], STANDARD, 0.5)[0] == pytest.approx(1.0)


def test_threshold_is_optimised_over_the_whole_corpus() -> None:
    scores = np.zeros(N)
    scores[100] = 0.6  # window start
    scores[50] = 0.8  # a false positive that a threshold of 0.8 would let through
    threshold, total = optimise_threshold([LabelledScores("f", scores, [WINDOW])], STANDARD)
    assert threshold == pytest.approx(0.6)
    assert total == pytest.approx(1.0 - STANDARD.a_fp)


def test_perfect_detector_normalises_to_100_and_null_to_0() -> None:
    second = (150, 159)
    perfect = np.zeros(N)
    perfect[[WINDOW[0], second[0]]] = 1.0
    files = [LabelledScores("a", perfect, [WINDOW, second])]
    result = benchmark(files)
    for name in PROFILES:
        assert result[name] == pytest.approx(100.0)
    null = benchmark([LabelledScores("a", np.zeros(N), [WINDOW, second])])
    for name in PROFILES:
        assert null[name] == pytest.approx(0.0)


def test_window_rows_maps_label_timestamps_to_inclusive_rows() -> None:
    stamps = np.arange("2024-01-01T00:00", "2024-01-01T10:00", 1, dtype="datetime64[m]")
    rows = window_rows(
        stamps.astype("datetime64[ms]"), [["2024-01-01 01:00:00.000000", "2024-01-01 03:00:00"]]
    )
    assert rows == [(60, 180)]


def test_files_scored_together_score_as_each_alone() -> None:
    rng = np.random.default_rng(4)
    series = []
    for n, start in ((700, 0), (450, 86_400_000), (600, 3_600_000)):
        values = 5.0 + np.sin(np.arange(n) / 20.0) + 0.3 * rng.standard_normal(n)
        values[n // 2] += 6.0
        values[n // 3] = np.nan
        series.append((values, start + np.arange(n, dtype=np.int64) * 300_000))
    together = score_together(series)
    for (values, t_ms), scores in zip(series, together, strict=True):
        alone = score_series(StreamingAnomalyDetector(), values, t_ms)
        np.testing.assert_array_equal(scores, alone)
        assert scores.max() > 0.0


def test_read_series_reads_blank_values_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,\n")
    times, values = read_series(path)
    assert times.tolist()[1] == datetime(2014, 4, 1, 0, 5)
    np.testing.assert_array_equal(values, [1.5, np.nan])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"timestamp,value\n2014-04-01 00:00:00,\xe9\n", "can't decode byte 0xe9"),
        (b"timestamp,value\nyesterday,1\n", '"yesterday"'),
        (b"timestamp,value\n2014-04-01 00:00:00,abc\n", "'abc'"),
        (b"timestamp,value\n2014-04-01 00:00:00\n", "line 2: no timestamp or no value"),
        (b"timestamp,value\n,1\n", "line 2: no timestamp or no value"),
        (b"time,v\n1,2\n", "columns timestamp,value"),
    ],
)
def test_a_file_that_is_not_nabs_is_refused_by_name(
    tmp_path: Path, text: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=f"^{path}: .*{re.escape(message)}"):
        read_series(path)
