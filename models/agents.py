"""Agent execution statistics and advice: how long a task will take, and who should take it.

Per agent x task type, :class:`AgentTaskStats` keeps exponentially forgetting statistics of
the log-duration (durations of software tasks are close to log-normal), the success rate, the
tasks in flight and the throughput. It predicts the run time with an interval, and
:func:`advise` ranks the agents able to take a task type by expected time to a success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
_Z90 = 1.6448536269514722


@dataclass
class AgentTaskStats:
    """Forgetting statistics of one agent on one task type.

    Parameters
    ----------
    half_life
        Finished tasks after which an old observation weighs half (default 50): recent
        behaviour dominates, so a degrading agent shows up within tens of tasks.

    Examples
    --------
    >>> s = AgentTaskStats()
    >>> for d in (1000.0, 1100.0, 900.0, 1000.0):
    ...     s.started(0)
    ...     s.finished(d, True, 60_000)
    >>> round(s.expected_duration_ms()), s.in_flight
    (998, 0)
    """

    half_life: float = 50.0
    weight: float = 0.0
    log_mean: float = 0.0
    log_var: float = 0.0
    success_rate: float = 1.0
    in_flight: int = 0
    throughput_per_min: float = 0.0
    last_finish_ms: int = 0

    @property
    def _decay(self) -> float:
        return float(0.5 ** (1.0 / self.half_life))

    def started(self, t_ms: int) -> None:
        self.in_flight += 1

    def finished(self, duration_ms: float | None, succeeded: bool, t_ms: int) -> None:
        """Learn a finished task (SUCCEEDED or FAILED)."""
        self.in_flight = max(0, self.in_flight - 1)
        decay = self._decay
        self.success_rate = decay * self.success_rate + (1 - decay) * float(succeeded)
        if duration_ms is not None and duration_ms > 0:
            x = math.log(duration_ms)
            self.weight = decay * self.weight + 1.0
            delta = x - self.log_mean
            self.log_mean += delta / self.weight
            self.log_var = decay * self.log_var + delta * (x - self.log_mean)
        if self.last_finish_ms and t_ms > self.last_finish_ms:
            rate = 60_000.0 / (t_ms - self.last_finish_ms)
            self.throughput_per_min = decay * self.throughput_per_min + (1 - decay) * rate
        self.last_finish_ms = max(self.last_finish_ms, t_ms)

    @property
    def sigma(self) -> float:
        if self.weight <= 1.0:
            return 1.0  # wide until there is evidence
        return math.sqrt(max(self.log_var / (self.weight - 1.0), 1e-6))

    def expected_duration_ms(self) -> float:
        """Median run time (the log-normal's exp(mu))."""
        return math.exp(self.log_mean) if self.weight > 0 else math.nan

    def interval_ms(self) -> tuple[float, float]:
        """A 90% interval of the run time."""
        return (
            math.exp(self.log_mean - _Z90 * self.sigma),
            math.exp(self.log_mean + _Z90 * self.sigma),
        )

    def p95_ms(self) -> float:
        return math.exp(self.log_mean + _Z90 * self.sigma)

    def features(self) -> dict[str, float]:
        """The agent x task type features, by name."""
        return {
            "success_rate": self.success_rate,
            "duration_mean_ms": math.exp(self.log_mean + self.sigma**2 / 2)
            if self.weight
            else math.nan,
            "duration_p95_ms": self.p95_ms() if self.weight else math.nan,
            "in_flight": float(self.in_flight),
            "throughput_per_min": self.throughput_per_min,
        }


def expected_time_to_success(stats: AgentTaskStats) -> float:
    """Median run time divided by the success rate: retries make failures cost time."""
    return stats.expected_duration_ms() / max(stats.success_rate, 0.01)


def advise(task_type: str, candidates: dict[str, AgentTaskStats], t_ms: int) -> Record | None:
    """A RoutingDecision for ``task_type`` from the candidates' statistics, best first."""
    known = {a: s for a, s in candidates.items() if s.weight > 0}
    if not known:
        return None
    ranked = sorted(known, key=lambda a: (expected_time_to_success(known[a]), a))
    best = known[ranked[0]]
    return {
        "task_type": task_type,
        "task_id": None,
        "agent": ranked[0],
        "expected_duration_ms": best.expected_duration_ms(),
        "success_probability": best.success_rate,
        "alternatives": [
            {
                "agent": a,
                "expected_duration_ms": known[a].expected_duration_ms(),
                "success_probability": known[a].success_rate,
            }
            for a in ranked[1:]
        ],
        "model": "agent_lognormal",
        "model_version": "1",
        "event_time": t_ms,
    }
