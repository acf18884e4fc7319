"""Score alerts against known incidents: caught, missed, false alarms, lead time.

The demo, the integration tests and the early-warning benchmark all judge the pipeline with
this one function. An incident is caught when a FIRING alert for its entity starts inside
its span (from ``lead_window_ms`` before its start to its failure or end); the lead time is
how long before the failure the first such alert fired. Every FIRING alert that matches no
incident is a false alarm.

Workflow pattern alerts are judged apart, per workflow (:func:`match_workflow_alerts`): the
demo and the workflow benchmark score them with that one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from models.workflows import LOOP, PRECURSOR, RARE_PATH, STALL


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


#: The injected pattern each workflow pattern alert is meant to find, and the others it may
#: rightly flag too (a loop is a rare path, but a rare-path alert need not find loops).
WORKFLOW_PATTERN_RULES: dict[str, tuple[str, frozenset[str]]] = {
    RARE_PATH: ("rare_path", frozenset({"loop"})),
    LOOP: ("loop", frozenset()),
    STALL: ("stall", frozenset()),
    PRECURSOR: ("precursor", frozenset()),
}


@dataclass(frozen=True)
class PatternOutcome:
    """What one workflow pattern alert made of the judged workflows.

    ``injected`` workflows were given its pattern and ``caught`` of them it flagged; it
    flagged ``alerted`` workflows, ``right`` of them given a pattern it may flag, and the
    rest are false alarms.
    """

    rule: str
    injected: int
    caught: int
    alerted: int
    right: int

    @property
    def false_alarms(self) -> int:
        return self.alerted - self.right


def match_workflow_alerts(
    patterns: Mapping[str, str | None], alerts: Iterable[Mapping[str, Any]]
) -> list[PatternOutcome]:
    """Score the FIRING workflow pattern alerts (Alert records, their entity the workflow)
    on the judged workflows, ``patterns`` (workflow id to its injected pattern, or None);
    alerts on other workflows, and other rules, are left out.

    Examples
    --------
    >>> patterns = {"wf-1": "loop", "wf-2": None, "wf-3": "stall"}
    >>> alerts = [{"rule": r, "entity": e, "status": "FIRING"} for r, e in
    ...           [("workflow_loop", "wf-1"), ("workflow_rare_path", "wf-1"),
    ...            ("workflow_stall", "wf-2"), ("workflow_stall", "wf-9")]]
    >>> [(o.rule, o.caught, o.injected, o.false_alarms)
    ...  for o in match_workflow_alerts(patterns, alerts)]  # doctest: +NORMALIZE_WHITESPACE
    [('workflow_rare_path', 0, 0, 0), ('workflow_loop', 1, 1, 0),
     ('workflow_stall', 0, 1, 1), ('workflow_precursor', 0, 0, 0)]
    """
    flagged: dict[str, set[str]] = {rule: set() for rule in WORKFLOW_PATTERN_RULES}
    for alert in alerts:
        rule, workflow = alert["rule"], alert["entity"]
        if alert["status"] == "FIRING" and rule in flagged and workflow in patterns:
            flagged[rule].add(workflow)
    outcomes = []
    for rule, (pattern, also) in WORKFLOW_PATTERN_RULES.items():
        injected = {w for w, p in patterns.items() if p == pattern}
        right = {w for w in flagged[rule] if patterns[w] in {pattern, *also}}
        caught = len(flagged[rule] & injected)
        outcomes.append(PatternOutcome(rule, len(injected), caught, len(flagged[rule]), len(right)))
    return outcomes
