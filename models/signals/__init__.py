"""Real telemetry in, modelled signals out: the first stage of an entity's pipeline.

* :mod:`.kinds`: what a series is (counter, gauge, histogram...), from the sender or its name;
* :mod:`.conversion`: counters to per-second rates, histograms to quantiles and means,
  staleness;
* :mod:`.expressions`: the PromQL subset that derives signals;
* :mod:`.relabel`: Prometheus relabelling, which picks the series that are signals as they are;
* :mod:`.rules`: profiles of rules (shipped in ``profiles/``, or one's own file);
* :mod:`.stage`: an entity's state between batches, and when a scrape is complete.
"""

from models.signals.kinds import MetricKind
from models.signals.rules import RulesError, SignalRules, Signals
from models.signals.stage import SignalStage, StageOutput

__all__ = ["MetricKind", "RulesError", "SignalRules", "SignalStage", "Signals", "StageOutput"]
