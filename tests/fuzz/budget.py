"""How hard the fuzz suite tries: a fixed, fast profile by default, a deep one on demand.

``FORESIGHT_FUZZ`` picks the profile:

* ``ci`` (the default, what ``make test`` and CI run): derandomized, so every run tries the
  same examples and a failure reproduces by running the test again; each target tries its
  own bounded number of examples; no example database.
* ``deep``: random examples, different on every run, fifty times as many per target; a
  failing example is saved under ``.hypothesis/`` and tried first on the next run.
  ``FORESIGHT_FUZZ=deep .venv/bin/pytest tests/fuzz -m "not integration"``.

A failure found by a deep run is kept as an explicit ``@example`` on its target, so the
default profile tries it on every run from then on.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"ci": 1, "deep": 50}
PROFILE = os.environ.get("FORESIGHT_FUZZ", "ci") or "ci"
if PROFILE not in PROFILES:
    raise ValueError(f"FORESIGHT_FUZZ={PROFILE!r}: use one of {', '.join(PROFILES)}")

# Hostile inputs are large on purpose (100,000-character names, 10,000 labels): the health
# checks that flag large or slow generation would refuse the very inputs the suite is for.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=_QUIET
)
settings.register_profile("deep", deadline=None, suppress_health_check=_QUIET)
settings.load_profile(PROFILE)


def fuzz(examples: int) -> settings:
    """A target's settings: ``examples`` in the default profile, fifty times more in ``deep``."""
    return settings(max_examples=examples * PROFILES[PROFILE])
