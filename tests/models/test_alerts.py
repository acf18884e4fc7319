"""Alert rules: hysteresis, minimum durations, one FIRING and one RESOLVED per episode."""

from __future__ import annotations

import pytest

from models.alerts import AlertRule, AlertState, FiringAlerts, evaluate

RULE = AlertRule(
    "risk",
    "FAILURE_RISK",
    threshold=0.7,
    clear=0.3,
    for_steps=2,
    severity="CRITICAL",
    summary="{entity} {metric} {value:.2f}",
    resolve_steps=3,
)


def _run(values: list[float]) -> list[tuple[int, str]]:
    state = AlertState()
    out = []
    for step, value in enumerate(values):
        alert = evaluate(RULE, state, "web-1", value, "mem", step * 1000)
        if alert:
            out.append((step, alert["status"]))
    return out


def test_fires_after_the_minimum_duration_and_resolves_once() -> None:
    values = [0.1, 0.8, 0.9, 0.95, 0.5, 0.6, 0.9, 0.2, 0.1, 0.1, 0.9]
    assert _run(values) == [(2, "FIRING"), (9, "RESOLVED")]


def test_the_hysteresis_band_does_not_flap() -> None:
    assert _run([0.9, 0.9] + [0.5, 0.65, 0.4] * 10) == [(1, "FIRING")]


def test_a_short_spike_does_not_fire() -> None:
    assert _run([0.1, 0.9, 0.1, 0.9, 0.1]) == []


def test_dedup_key_and_episode_id_are_stable() -> None:
    state = AlertState()
    fired = [evaluate(RULE, state, "web-1", 0.9, "mem", t) for t in (0, 1)][-1]
    resolved = [evaluate(RULE, state, "web-1", 0.0, "mem", t) for t in (2, 3, 4)][-1]
    assert fired is not None and resolved is not None
    assert fired["dedup_key"] == resolved["dedup_key"] == "risk/web-1"
    assert fired["alert_id"] == resolved["alert_id"] == "risk/web-1@1"
    assert resolved["ends_at"] == 4
    restored = AlertState.from_array(state.as_array())
    assert restored.as_array() == state.as_array()


def test_a_rule_without_hysteresis_is_refused() -> None:
    with pytest.raises(ValueError, match="clear"):
        AlertRule("bad", "ANOMALY", 0.5, 0.5, 1, "INFO", "x")


def _change(entity: str, status: str, starts_at: int, rule: str = "risk") -> dict[str, object]:
    key = f"{rule}/{entity}"
    return {"dedup_key": key, "alert_id": f"{key}@{starts_at}", "status": status,
            "starts_at": starts_at}  # fmt: skip


def test_a_state_change_delivered_twice_counts_once() -> None:
    alerts = FiringAlerts()
    fired, resolved = _change("web-1", "FIRING", 1), _change("web-1", "RESOLVED", 1)
    assert [alerts.apply(a) for a in (fired, fired)] == [True, False]
    assert alerts.firing() == [fired]
    assert [alerts.apply(a) for a in (resolved, resolved)] == [True, False]
    # A worker that replays its last steps sends the episode's FIRING again: still resolved.
    assert not alerts.apply(fired)
    assert alerts.firing() == [] and len(alerts) == 0


def test_a_new_episode_fires_again_and_an_older_one_cannot_clear_it() -> None:
    alerts = FiringAlerts()
    first, second = _change("web-1", "FIRING", 1), _change("web-1", "FIRING", 9)
    other = _change("db-1", "FIRING", 5)
    assert all(alerts.apply(a) for a in (first, other, second))
    assert alerts.firing() == [other, second]
    assert alerts.apply(_change("web-1", "RESOLVED", 1))  # news, but about the first episode
    assert alerts.firing() == [other, second]
    assert alerts.apply(_change("web-1", "RESOLVED", 9))
    assert alerts.firing() == [other]


def test_only_the_latest_episodes_are_remembered() -> None:
    alerts = FiringAlerts(remember=2)
    changes = [_change(f"web-{i}", "FIRING", i) for i in range(3)]
    assert all(alerts.apply(a) for a in changes)
    assert alerts.apply(changes[0])  # forgotten, so it counts again
    assert not alerts.apply(changes[2])
    with pytest.raises(ValueError, match="at least 1"):
        FiringAlerts(remember=0)
