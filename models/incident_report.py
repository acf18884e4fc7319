"""Score alerts against known incidents: caught, missed, false alarms, lead time.

The demo, the integration tests and the early-warning benchmark all judge the pipeline with
this one function. An incident is caught when a FIRING alert for its entity starts inside
its span (from ``lead_window_ms`` before its start to its failure or end); the lead time is
how long before the failure the first such alert fired. Every FIRING alert that matches no
incident is a false alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Incident:
    """An injected or labelled incident."""

    entity: str
    incident_type: str
    start_ms: int
    end_ms: int
    failure_ms: int | None = None


@dataclass(frozen=True)
class IncidentOutcome:
    """What the alerts made of one incident."""

    entity: str
    incident_type: str
    caught: bool
    first_alert_ms: int | None
    rule: str | None
    lead_time_s: float | None  # before the failure; None for incidents without one


@dataclass(frozen=True)
class IncidentReport:
    outcomes: list[IncidentOutcome]
    false_alarms: list[dict[str, Any]]

    @property
    def caught(self) -> int:
        return sum(o.caught for o in self.outcomes)

    @property
    def missed(self) -> int:
        return len(self.outcomes) - self.caught

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents": len(self.outcomes),
            "caught": self.caught,
            "missed": self.missed,
            "false_alarms": len(self.false_alarms),
            "outcomes": [asdict(o) for o in self.outcomes],
            "false_alarm_alerts": self.false_alarms,
        }


def match_alerts(
    incidents: list[Incident], alerts: list[dict[str, Any]], lead_window_ms: int = 0
) -> IncidentReport:
    """Match FIRING alerts (Alert records) to ``incidents``.

    Examples
    --------
    >>> incident = Incident("web-1", "memory_leak", 0, 1_000_000, failure_ms=1_000_000)
    >>> alert = {"entity": "web-1", "status": "FIRING", "starts_at": 400_000,
    ...          "rule": "failure_risk", "alert_id": "a"}
    >>> report = match_alerts([incident], [alert])
    >>> report.caught, report.outcomes[0].lead_time_s, report.false_alarms
    (1, 600.0, [])
    """
    firing = sorted(
        (a for a in alerts if a["status"] == "FIRING"), key=lambda a: int(a["starts_at"])
    )
    matched: set[str] = set()
    outcomes = []
    for incident in incidents:
        until = incident.failure_ms if incident.failure_ms is not None else incident.end_ms
        hits = [
            a for a in firing
            if a["entity"] == incident.entity
            and incident.start_ms - lead_window_ms <= int(a["starts_at"]) <= until
        ]  # fmt: skip
        for a in hits:
            matched.add(a["alert_id"])
        first = hits[0] if hits else None
        lead = None
        if first is not None and incident.failure_ms is not None:
            lead = (incident.failure_ms - int(first["starts_at"])) / 1000
        outcomes.append(
            IncidentOutcome(
                entity=incident.entity,
                incident_type=incident.incident_type,
                caught=first is not None,
                first_alert_ms=int(first["starts_at"]) if first else None,
                rule=first["rule"] if first else None,
                lead_time_s=lead,
            )
        )
    false_alarms: list[dict[str, Any]] = [
        {k: a[k] for k in ("entity", "rule", "starts_at", "summary") if k in a}
        for a in firing
        if a["alert_id"] not in matched
    ]
    return IncidentReport(outcomes, false_alarms)
