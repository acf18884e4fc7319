"""Which signals are a used amount of a capacity, and of how much: the rules that switch on
exhaustion (BOTTLENECK) and failure-risk models for a signal.

No model keys on a metric's name: a profile of rules says, by pattern, which signals are
used fractions (``memory used / total``, a filesystem's used share) and their capacity, and
the models run for every signal so marked. :data:`SIMULATOR` is the profile of the project's
own simulator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.base import FloatArray


@dataclass(frozen=True)
class CapacityRules:
    """Patterns (full match on the signal name) and the capacity of the signals they match.

    Examples
    --------
    >>> rules = CapacityRules.of({r"memory_percent|disk_used_percent": 100.0})
    >>> rules.capacities(["cpu_percent", "disk_used_percent"]).tolist()
    [nan, 100.0]
    """

    rules: tuple[tuple[re.Pattern[str], float], ...]

    @classmethod
    def of(cls, patterns: Mapping[str, float]) -> CapacityRules:
        return cls(tuple((re.compile(p), float(c)) for p, c in patterns.items()))

    def capacities(self, names: Sequence[str]) -> FloatArray:
        """Each name's capacity (the first rule that matches), NaN where none does."""
        out = np.full(len(names), np.nan)
        for i, name in enumerate(names):
            for pattern, capacity in self.rules:
                if pattern.fullmatch(name):
                    out[i] = capacity
                    break
        return out


SIMULATOR = CapacityRules.of({r"memory_percent|disk_used_percent": 100.0})
"""The simulator's hosts: memory and disk in percent of their capacity."""
