"""``foresight score`` writes the entity's score as ``anomaly_score`` and each column's own
score beside it, as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

FORESIGHT = Path(sys.executable).parent / "foresight"


def test_score_writes_the_entity_score_and_the_per_metric_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    load = 0.5 + 0.3 * np.sin(np.arange(600) / 50)
    data = tmp_path / "web-1.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "cpu", "network"])
        for k, level in enumerate(load):
            cpu, network = 60 * level + rng.normal(), 300 * level + 5 * rng.normal()
            if k >= 500:  # traffic falls as CPU rises: the metrics break apart
                network = 300 * (1.0 - level) + 5 * rng.normal()
            writer.writerow([1_700_000_000 + 60 * k, f"{cpu:.3f}", f"{network:.3f}"])
    run = subprocess.run(
        [str(FORESIGHT), "score", "--input", str(data), "--out", str(tmp_path / "out"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)[0]
    with (tmp_path / "out" / "web-1.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "anomaly_score", "cpu_score", "network_score"]
    entity = np.array([float(r["anomaly_score"]) for r in rows])
    assert ((entity >= 0) & (entity <= 1)).all()
    assert entity[500:].max() >= 0.5 > entity[:500].max()
    assert abs(summary["max_anomaly_score"] - entity.max()) < 1e-6
