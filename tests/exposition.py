"""Exporter scrapes saved as Prometheus text (``tests/data/*.prom``), read for the tests.

The node_exporter scrapes are real: Debian's prometheus-node-exporter 1.5.0, default
collectors, two scrapes 5 s apart on this project's machine, ``# HELP`` lines removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from models.base import FloatArray
from models.signals import MetricKind
from models.signals.series import series_name

DATA = Path(__file__).parent / "data"
NODE_EXPORTER = [DATA / f"node_exporter-1.5-scrape-{i}.prom" for i in (1, 2)]
# The text format's type words, as remote_write metadata numbers them.
TYPE_NUMBERS = {"counter": 1, "gauge": 2, "histogram": 3, "summary": 5, "info": 6}


@dataclass(frozen=True)
class ScrapedSeries:
    labels: dict[str, str]  # __name__ included
    value: float
    family: str
    type: str  # counter, gauge, histogram, summary, unknown...


def scrape(path: Path) -> list[ScrapedSeries]:
    """Every sample of a scrape, with its family's declared type."""
    return [
        ScrapedSeries({"__name__": s.name, **s.labels}, s.value, family.name, family.type)
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    ]


def as_batch(series: list[ScrapedSeries]) -> tuple[list[str], FloatArray, list[MetricKind]]:
    """Series names, values and kinds, as a MetricBatch carries them."""
    names = [series_name(s.labels) for s in series]
    values = np.array([s.value for s in series])
    kinds = [MetricKind.from_number(TYPE_NUMBERS.get(s.type, 0)) for s in series]
    return names, values, kinds
