"""A/B tests beyond shadow: which model version serves which entities.

An A/B split gives each listed candidate version a percentage of the entities; production
serves the rest. An entity's place is a fixed point in [0, 1) (:func:`entity_slot`, a hash of
its name: the same on every worker, in every process, after every restart), and each arm
is an interval of that line: candidates from 0 upward in version order, production above
them. So an entity stays in its arm for as long as the percentages do, and changing the
newest arm's percentage moves only the entities between its old and new edge (from or to
production); changing an older arm's shifts the arms above it.

A version in the split serves its arm: its FAILURE_RISK predictions are the ones the alert
rules read for those entities, and it makes no others, so the predictions of a version are
exactly its arm's (per version in ClickHouse, and on ``/metrics``).

Examples
--------
>>> split = TrafficSplit.parse(["2=20", "3=5"])
>>> split.shares
{'2': 20.0, '3': 5.0}
>>> split.arms("1")
{'2': (0.0, 0.2), '3': (0.2, 0.25), '1': (0.25, 1.0)}
>>> [serving(split.arms("1"), entity) for entity in ("web-1", "web-2", "db-7")]
['2', '1', '2']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_SCALE = float(2**64)


def entity_slot(entity: str) -> float:
    """The entity's fixed point in [0, 1): the first 8 bytes of its name's BLAKE2b hash."""
    digest = hashlib.blake2b(entity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def serving(arms: Mapping[str, tuple[float, float]], entity: str) -> str:
    """The version whose arm holds ``entity`` ('' when none does: no production version)."""
    slot = entity_slot(entity)
    return next((v for v, (low, high) in arms.items() if low <= slot < high), "")


@dataclass(frozen=True)
class TrafficSplit:
    """Each candidate version's percentage of the entities (production has the rest)."""

    shares: dict[str, float]

    def __post_init__(self) -> None:
        for version, percent in self.shares.items():
            if not version.isdigit():
                raise ValueError(f"version {version!r} in the split is not a version number")
            if not 0.0 < percent <= 100.0:
                raise ValueError(
                    f"version {version} gets {percent:g}% of the entities: give a percentage "
                    "above 0 and at most 100 (drop a version from the split to give it none)"
                )
        total = sum(self.shares.values())
        if total > 100.0 + 1e-9:
            raise ValueError(
                f"the split gives candidates {total:g}% of the entities in all, more than 100%"
            )

    @classmethod
    def parse(cls, items: Sequence[str]) -> TrafficSplit:
        """From ``VERSION=PERCENT`` items, as ``foresight models split`` takes them."""
        shares: dict[str, float] = {}
        for item in items:
            version, sep, percent = item.partition("=")
            try:
                value = float(percent)
            except ValueError:
                value = float("nan")
            if not sep or not version.strip() or value != value:
                raise ValueError(
                    f"{item!r} is not VERSION=PERCENT: write e.g. 2=20 for version 2 on 20% "
                    "of the entities"
                )
            shares[version.strip()] = value
        return cls(shares)

    def arms(self, production: str | None) -> dict[str, tuple[float, float]]:
        """Each serving version's interval of entity slots: candidates in version order from
        0, then ``production`` (when there is one) up to 1."""
        arms: dict[str, tuple[float, float]] = {}
        low = 0.0
        for version in sorted(self.shares, key=int):
            high = min(low + self.shares[version] / 100.0, 1.0)
            arms[version] = (low, high)
            low = high
        if production is not None and production not in arms:
            arms[production] = (low, 1.0)
        return arms
