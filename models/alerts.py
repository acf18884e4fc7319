"""Alert rules over predictions: threshold with hysteresis, a minimum duration, stable keys.

A rule watches one prediction kind of an entity (the worst value over its metrics, the
``min_metrics``-th worst when a rule asks for several metrics to agree, or only the entity's
own prediction, metric ``*``), so the alert groups per entity, not per metric. It fires once
when the value has stayed at or above ``threshold`` for ``for_steps`` consecutive steps, and
resolves once when it has stayed below ``clear`` (< threshold: the hysteresis band) for
``resolve_steps`` steps (Alertmanager's ``for`` and ``keep_firing_for``). Between the two it
stays silent, however many predictions arrive: downstream tools receive one FIRING and one
RESOLVED per episode, under a dedup key that is stable across restarts (``rule/entity``).

Readers of the alert stream fold it with :class:`FiringAlerts`, which takes each state change
once however often it is delivered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True)
class AlertRule:
    """One rule: which prediction kind, when to fire and when to clear."""

    name: str
    kind: str
    threshold: float
    clear: float
    for_steps: int
    severity: str
    summary: str  # str.format template: {entity}, {metric}, {value}, {detail}
    resolve_steps: int = 0  # 0: the same as for_steps
    min_metrics: int = 1
    metric: str = ""  # only predictions of this metric ("*": the entity's own); "": any

    def __post_init__(self) -> None:
        if not self.clear < self.threshold:
            raise ValueError(
                f"rule {self.name}: clear ({self.clear}) must be below threshold "
                f"({self.threshold}) to give hysteresis"
            )
        if self.for_steps < 1 or self.resolve_steps < 0 or self.min_metrics < 1:
            raise ValueError(
                f"rule {self.name}: for_steps ({self.for_steps}) and min_metrics "
                f"({self.min_metrics}) must be >= 1, resolve_steps ({self.resolve_steps}) >= 0"
            )

    @property
    def steps_to_resolve(self) -> int:
        return self.resolve_steps or self.for_steps


DEFAULT_ANOMALY_THRESHOLD = 0.5


def anomaly_rule(threshold: float = DEFAULT_ANOMALY_THRESHOLD) -> AlertRule:
    """The entity anomaly rule: the entity's score (metric ``*``) at or above ``threshold``.

    The entity detector scores a sustained departure of the metrics as a whole, calibrated
    per entity, so one step at the threshold fires, and the alert holds through five calm
    minutes (at a 10-second step). The summary names the metrics that contributed most.
    """
    return AlertRule(
        name="anomaly",
        kind="ANOMALY",
        metric="*",
        threshold=threshold,
        clear=threshold / 2,
        for_steps=1,
        resolve_steps=30,
        severity="WARNING",
        summary="{entity} behaves abnormally (score {value:.2f}): {detail}",
    )


def default_rules(anomaly_threshold: float = DEFAULT_ANOMALY_THRESHOLD) -> tuple[AlertRule, ...]:
    """The shipped rules: failure risk, and the entity anomaly rule at ``anomaly_threshold``."""
    return (
        AlertRule(
            name="failure_risk",
            kind="FAILURE_RISK",
            threshold=0.7,
            clear=0.3,
            for_steps=2,
            severity="CRITICAL",
            summary="{entity}: {metric} on course to exhaustion (risk {value:.2f}): {detail}",
        ),
        anomaly_rule(anomaly_threshold),
    )


DEFAULT_RULES = default_rules()


class AlertState:
    """Where one rule stands for one entity; four numbers, stored with the entity's state."""

    __slots__ = ("firing", "peak", "run", "started_ms")

    def __init__(self) -> None:
        self.firing = False
        self.run = 0  # consecutive steps on the other side of the band
        self.started_ms = 0
        self.peak = 0.0

    def as_array(self) -> list[float]:
        return [float(self.firing), float(self.run), float(self.started_ms), self.peak]

    @classmethod
    def from_array(cls, values: list[float]) -> AlertState:
        state = cls()
        state.firing = bool(values[0])
        state.run = int(values[1])
        state.started_ms = int(values[2])
        state.peak = float(values[3])
        return state


def evaluate(
    rule: AlertRule,
    state: AlertState,
    entity: str,
    value: float,
    metric: str,
    t_ms: int,
    labels: dict[str, str] | None = None,
    detail: str | Callable[[], str] = "",
) -> Record | None:
    """Advance ``state`` by one step; an Alert record when the rule fires or resolves.

    ``detail`` (what contributed to ``value``, for a person) fills the summary's
    ``{detail}`` and the ``contributions`` label when not empty. It may be a function that
    makes it, called only when there is an alert: most steps change nothing, and naming the
    drivers costs more than the rule."""
    crossing = value < rule.clear if state.firing else value >= rule.threshold
    state.run = state.run + 1 if crossing else 0
    if not state.firing:
        state.peak = max(state.peak, value) if crossing else 0.0
    if state.run < (rule.steps_to_resolve if state.firing else rule.for_steps):
        return None
    state.run = 0
    state.firing = not state.firing
    if state.firing:
        state.started_ms = t_ms
    if callable(detail):
        detail = detail()
    summary = rule.summary.format(
        entity=entity, metric=metric or "-", value=value, detail=detail or "-"
    )
    labels = {
        **(labels or {}),
        "kind": rule.kind,
        "metric": metric,
        **({"contributions": detail} if detail else {}),
    }
    return alert_record(
        rule.name, rule.severity, entity, state.firing, state.started_ms, t_ms, summary, value,
        labels,
    )  # fmt: skip


def alert_record(
    rule: str,
    severity: str,
    entity: str,
    firing: bool,
    started_ms: int,
    t_ms: int,
    summary: str,
    value: float,
    labels: dict[str, str],
) -> Record:
    """The Alert record of one state change: an episode of ``rule`` on ``entity`` that
    started at ``started_ms`` fires, or resolves at ``t_ms``."""
    dedup_key = f"{rule}/{entity}"
    return {
        "dedup_key": dedup_key,
        "alert_id": f"{dedup_key}@{started_ms}",
        "status": "FIRING" if firing else "RESOLVED",
        "severity": severity,
        "rule": rule,
        "entity": entity,
        "summary": summary,
        "value": float(value),
        "labels": labels,
        "starts_at": started_ms,
        "ends_at": None if firing else t_ms,
        "event_time": t_ms,
    }


_STATUS_ORDER = {"FIRING": 0, "RESOLVED": 1}


class FiringAlerts:
    """Which alerts fire now, folded from the alerts topic, each state change taken once.

    The topic is at-least-once: a worker that restarts decides again the steps since its last
    checkpoint, and two workers fed the same telemetry decide the same changes, so one change
    can arrive twice. A change is known by its episode (``alert_id``: dedup key and start
    time) and its status, so :meth:`apply` takes a FIRING once and a RESOLVED once per episode,
    and a FIRING that arrives after its episode resolved changes nothing. Per dedup key the
    newest FIRING episode is the one firing; a RESOLVED clears it unless a later episode has
    started since.

    Parameters
    ----------
    remember
        Episodes remembered (default 100,000, the most recent); a change re-sent after that
        many newer episodes counts again.

    Examples
    --------
    >>> fired = {"dedup_key": "risk/web-1", "alert_id": "risk/web-1@1", "status": "FIRING",
    ...          "starts_at": 1}
    >>> resolved = {**fired, "status": "RESOLVED"}
    >>> alerts = FiringAlerts()
    >>> [alerts.apply(a) for a in (fired, fired)], len(alerts)
    ([True, False], 1)
    >>> [alerts.apply(a) for a in (resolved, fired, resolved)], len(alerts)
    ([True, False, False], 0)
    """

    def __init__(self, remember: int = 100_000) -> None:
        if remember < 1:
            raise ValueError(f"FiringAlerts must remember at least 1 episode, got {remember}")
        self._remember = remember
        self._episodes: OrderedDict[str, str] = OrderedDict()  # alert_id -> furthest status
        self._firing: dict[str, Record] = {}  # dedup_key -> its FIRING record

    def __len__(self) -> int:
        return len(self._firing)

    def apply(self, alert: Record) -> bool:
        """Fold one Alert record in; ``True`` when it is a state change not seen before."""
        episode, status = alert["alert_id"], alert["status"]
        seen = self._episodes.get(episode)
        if seen is not None and _STATUS_ORDER[status] <= _STATUS_ORDER[seen]:
            return False
        self._episodes[episode] = status
        self._episodes.move_to_end(episode)
        if len(self._episodes) > self._remember:
            self._episodes.popitem(last=False)
        key = alert["dedup_key"]
        if status == "FIRING":
            self._firing[key] = alert
        elif key in self._firing and self._firing[key]["starts_at"] <= alert["starts_at"]:
            del self._firing[key]
        return True

    def firing(self) -> list[Record]:
        """The firing alerts, oldest episode first."""
        return sorted(self._firing.values(), key=lambda a: (a["starts_at"], a["dedup_key"]))
