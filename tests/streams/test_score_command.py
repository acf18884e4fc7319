"""``foresight score`` writes the entity's score as ``anomaly_score`` and each column's own
score beside it, as a user runs it; a spreadsheet's UTF-8 export reads as well, and a file
in another encoding is refused by name."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

FORESIGHT = Path(sys.executable).parent / "foresight"


def _score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FORESIGHT), "score", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_spreadsheet_export_with_a_byte_order_mark_keeps_its_column_names(
    tmp_path: Path,
) -> None:
    data = tmp_path / "export.csv"
    rows = [f"{k % 7},{1_700_000_000 + 60 * k}" for k in range(50)]
    data.write_text("\n".join(["cpu,timestamp", *rows]) + "\n", encoding="utf-8-sig")
    run = _score("--input", str(data), "--out", str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    assert list(json.loads(run.stdout)[0]["max_score"]) == ["cpu"]
    with (tmp_path / "out" / "export.csv").open(newline="") as handle:
        assert next(csv.reader(handle)) == ["timestamp", "anomaly_score", "cpu_score"]


def test_a_file_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "latin1.csv"
    data.write_bytes("timestamp,d\u00e9bit\n1700000000,1\n".encode("latin-1"))
    run = _score("--input", str(data), "--out", str(tmp_path / "out"))
    assert run.returncode == 2
    assert run.stderr.startswith(f"foresight score: {data}: not UTF-8 text"), run.stderr


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """``foresight score --json | head -c 100``: the JSON outgrows the pipe, the reader
    leaves, and the command ends quietly (every command goes through the same exit)."""
    data = tmp_path / "wide.csv"
    columns = [f"metric_{i}" for i in range(6000)]
    rows = [",".join([str(1_700_000_000 + 60 * k), *("1" for _ in columns)]) for k in range(5)]
    data.write_text("\n".join([",".join(["timestamp", *columns]), *rows]) + "\n")
    command = [str(FORESIGHT), "score", "--input", str(data), "--out", str(tmp_path), "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        assert run.stdout is not None and run.stderr is not None
        assert run.stdout.read(100)
        run.stdout.close()
        assert run.wait(timeout=120) == 0
        assert run.stderr.read() == b""


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
    run = _score("--input", str(data), "--out", str(tmp_path / "out"), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)[0]
    with (tmp_path / "out" / "web-1.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "anomaly_score", "cpu_score", "network_score"]
    entity = np.array([float(r["anomaly_score"]) for r in rows])
    assert ((entity >= 0) & (entity <= 1)).all()
    assert entity[500:].max() >= 0.5 > entity[:500].max()
    assert abs(summary["max_anomaly_score"] - entity.max()) < 1e-6
