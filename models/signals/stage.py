"""An entity's first stage: MetricBatches in, signals out at each closed scrape.

A scrape of an entity may reach the worker in several MetricBatches (Prometheus shards a
target's series across requests; the receiver splits large groups), so the signals of the
scrape at ``t`` are computed when it is complete: when a batch stamped later arrives, or
when the entity's window step closes (:meth:`SignalStage.close`). The evaluation is an
instant query at ``t`` over each series' newest value within the lookback, so a piece of a
scrape that arrives after its scrape was closed joins the next one, as it would in
Prometheus; evaluation times only ever increase, so no signal gets two values for one time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.base import FloatArray
from models.signals.conversion import SeriesTable
from models.signals.kinds import MetricKind
from models.signals.rules import Passthrough, SignalRules, Signals


@dataclass
class StageOutput:
    """Signals of the scrapes a batch closed, and what could not be taken, by reason:
    series past the series limit, samples not newer than their series' previous one, and
    (filled by the entity's pipeline) signals past the windows' limit, as ``(signal,
    profile, rule)``."""

    signals: list[Signals] = field(default_factory=list)
    over_series_limit: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)


class SignalStage:
    """Conversion state and scrape bookkeeping of one entity (rules shared by all).

    Examples
    --------
    >>> import numpy as np
    >>> stage = SignalStage(SignalRules.shipped())
    >>> kinds = [MetricKind.UNKNOWN] * 2
    >>> out = stage.observe(0, ["memory_percent", "go_goroutines"], np.array([40.0, 9]), kinds)
    >>> [(s.t_ms, s.names, s.capacities.tolist()) for s in stage.close().signals]
    [(0, ['memory_percent'], [100.0])]
    """

    def __init__(
        self, rules: SignalRules, max_series: int = 10_000, lookback_ms: int = 300_000
    ) -> None:
        self.rules = rules
        self.series = SeriesTable(max_series, lookback_ms)
        self.open_ms: int | None = None  # newest sample time not yet evaluated
        self.evaluated_ms: int | None = None
        self._plan: tuple[int, Passthrough | None] | None = None  # for the series' version

    def observe(
        self,
        t_ms: int,
        names: Sequence[str],
        values: FloatArray,
        kinds: Sequence[MetricKind],
        ended: Sequence[str] = (),
    ) -> StageOutput:
        """Take one MetricBatch: its samples, their kinds (UNKNOWN where not said) and the
        series that ended at ``t_ms`` (staleness markers)."""
        out = StageOutput()
        if self.open_ms is not None and t_ms > self.open_ms:
            out.signals += self.close().signals
        observed = self.series.observe(t_ms, names, values, kinds)
        self.series.end(ended)
        out.over_series_limit = observed.over_limit
        out.out_of_order = observed.out_of_order
        if self.evaluated_ms is None or t_ms > self.evaluated_ms:
            self.open_ms = t_ms if self.open_ms is None else max(self.open_ms, t_ms)
        return out

    def close(self) -> StageOutput:
        """Evaluate the open scrape, if any: its signals."""
        if self.open_ms is None:
            return StageOutput()
        t_ms, self.open_ms = self.open_ms, None
        self.evaluated_ms = t_ms
        plan = self._passthrough()
        if plan is None:
            return StageOutput([self.rules.evaluate(t_ms, self.series.scrape(t_ms))])
        values, fresh = self.series.fresh_values(t_ms)
        return StageOutput([plan.signals(t_ms, values, fresh)])

    def _passthrough(self) -> Passthrough | None:
        """The entity's passthrough plan, made again when its series change (None: the
        scrape is evaluated in full)."""
        series = self.series
        if self._plan is None or self._plan[0] != series.version:
            plan = None
            if not series.derives():
                plan = self.rules.passthrough(series.names, series.labels, series.kinds())
            self._plan = (series.version, plan)
        return self._plan[1]

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], FloatArray]:
        header, table = self.series.state()
        return {**header, "open_ms": self.open_ms, "evaluated_ms": self.evaluated_ms}, table

    def restore(self, header: dict[str, Any], table: FloatArray) -> None:
        """Take back the state :meth:`state` saved."""
        self.series = SeriesTable.restore(
            header, table, self.series.max_series, self.series.lookback_ms
        )
        self._plan = None
        self.open_ms = header["open_ms"]
        self.evaluated_ms = header["evaluated_ms"]
