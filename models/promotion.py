"""Promotion with a test: is a candidate model better than production on the same steps?

Both versions scored the same entities at the same window steps (the candidate in shadow),
and the labels of those steps have arrived. :func:`promotion_test` compares them pairwise:

* **Paired bootstrap of the Brier score** (the decision). The per-step improvement is
  ``d_i = (p_prod_i - y_i)^2 - (p_cand_i - y_i)^2``; its mean is the effect (how much the
  Brier score falls). The steps are resampled with replacement, the same rows for both
  versions, ``resamples`` times; the one-sided p-value is the share of resamples in which the
  candidate is not better by more than ``min_gain`` (with the usual ``+1`` correction, so it is
  never 0). The candidate is promoted only when ``p < alpha``: a candidate that scores exactly
  like production gets p = 1, and a worse one a p near 1.
* **McNemar's exact test on alarms** at the operating threshold (reported beside it): of the
  steps where exactly one version's alarm was right, how often was it the candidate's? A
  two-sided binomial test on those discordant steps.

Steps of one entity are correlated, so resampling steps treats a series as more independent
than it is, and the p-value is optimistic when few entities carry the sample: ``min_gain``
(the smallest improvement worth a promotion) and a sample of many entities guard against it.

References
----------
Efron and Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 16 (bootstrap tests).
McNemar, "Note on the sampling error of the difference between correlated proportions or
percentages", Psychometrika 12 (1947).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

PAIRED_BOOTSTRAP_BRIER = "paired_bootstrap_brier"


@dataclass(frozen=True)
class PromotionTest:
    """The outcome of comparing a candidate with production on the same labelled steps.

    ``effect`` is the mean fall of the Brier score (production's minus the candidate's;
    positive: the candidate is better), with its bootstrap 95% interval ``effect_low`` ..
    ``effect_high``; ``relative_effect`` is that fall as a share of production's Brier score.
    """

    test: str
    p_value: float
    alpha: float
    min_gain: float
    promote: bool
    effect: float
    effect_low: float
    effect_high: float
    relative_effect: float
    steps: int
    positives: int
    entities: int
    production_brier: float
    candidate_brier: float
    resamples: int
    seed: int
    mcnemar_p_value: float
    alarms_only_candidate_right: int
    alarms_only_production_right: int
    threshold: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types: an undefined number (no steps to compare) is None."""
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }

    def metrics(self) -> dict[str, float]:
        """The numbers a ModelUpdate's ``metrics`` map carries (``promotion_*``)."""
        return {
            "promotion_p_value": self.p_value,
            "promotion_effect": self.effect,
            "promotion_relative_effect": self.relative_effect,
            "promotion_steps": float(self.steps),
            "promotion_positives": float(self.positives),
            "promotion_entities": float(self.entities),
            "promotion_production_brier": self.production_brier,
            "promotion_candidate_brier": self.candidate_brier,
            "promotion_mcnemar_p_value": self.mcnemar_p_value,
            "promotion_promoted": float(self.promote),
        }


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (1.0 when both are 0).

    Examples
    --------
    >>> round(mcnemar_exact(12, 2), 4), mcnemar_exact(0, 0)
    (0.0129, 1.0)
    """
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_a, discordant, 0.5).pvalue)


def promotion_test(
    target: npt.ArrayLike,
    production: npt.ArrayLike,
    candidate: npt.ArrayLike,
    *,
    entities: npt.ArrayLike | None = None,
    threshold: float = 0.5,
    alpha: float = 0.05,
    min_gain: float = 0.0,
    resamples: int = 2000,
    seed: int = 0,
    min_steps: int = 30,
) -> PromotionTest:
    """Paired bootstrap of the Brier score (and McNemar on alarms) over the same steps.

    Parameters
    ----------
    target
        1 where a failure followed the step within the horizon, else 0.
    production, candidate
        Each version's failure probability for the same steps, in the same order.
    entities
        The entity of each step (only counted: the sample's breadth).
    threshold
        The alert threshold at which a probability is an alarm (McNemar).
    alpha
        Promote only when the p-value is below it.
    min_gain
        Smallest fall of the Brier score worth promoting (0: any improvement).
    resamples, seed
        The bootstrap's resamples and random seed: the same inputs give the same result.
    min_steps
        Fewer common steps than this are refused untested: a bootstrap of a handful of
        steps says little.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(400) < 0.2).astype(int)
    >>> sharp = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.05, 400), 0, 1)
    >>> vague = np.full(400, 0.2)
    >>> better = promotion_test(y, vague, sharp)
    >>> better.promote, better.p_value < 0.01, better.effect > 0
    (True, True, True)
    >>> promotion_test(y, sharp, sharp).promote, promotion_test(y, sharp, sharp).p_value
    (False, 1.0)
    """
    y = np.asarray(target, dtype=np.float64)
    p_prod = np.asarray(production, dtype=np.float64)
    p_cand = np.asarray(candidate, dtype=np.float64)
    if not (y.shape == p_prod.shape == p_cand.shape) or y.ndim != 1:
        raise ValueError(
            f"the promotion test needs one target, production and candidate score per step; "
            f"got shapes {y.shape}, {p_prod.shape} and {p_cand.shape}"
        )
    finite = np.isfinite(p_prod) & np.isfinite(p_cand) & np.isfinite(y)
    if not finite.all():
        raise ValueError(
            f"{int((~finite).sum())} of {len(y)} steps have a NaN or infinite score or target; "
            "compare only steps both versions scored"
        )
    if resamples < 100 or not 0 < alpha < 1:
        raise ValueError(f"need resamples >= 100 and 0 < alpha < 1; got {resamples}, {alpha}")
    n = len(y)
    groups = 0 if entities is None else len(np.unique(np.asarray(entities)))
    if n == 0:
        return _refused_empty(threshold, alpha, min_gain, resamples, seed, groups)
    loss_prod, loss_cand = (p_prod - y) ** 2, (p_cand - y) ** 2
    gain = loss_prod - loss_cand
    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for start in range(0, resamples, 256):  # bounded memory: 256 resamples x n at a time
        count = min(256, resamples - start)
        boot[start : start + count] = gain[rng.integers(0, n, size=(count, n))].mean(axis=1)
    effect = float(gain.mean())
    p_value = float((1 + np.count_nonzero(boot <= min_gain)) / (resamples + 1))
    low, high = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
    alarm_prod, alarm_cand, truth = p_prod >= threshold, p_cand >= threshold, y >= 0.5
    only_cand = int(((alarm_cand == truth) & (alarm_prod != truth)).sum())
    only_prod = int(((alarm_prod == truth) & (alarm_cand != truth)).sum())
    brier_prod = float(loss_prod.mean())
    promote = p_value < alpha and n >= min_steps
    if n < min_steps:
        reason = f"only {n} labelled steps in common; the test needs at least {min_steps}"
    elif promote:
        reason = (
            f"candidate better: Brier {brier_prod:.4f} -> {float(loss_cand.mean()):.4f} "
            f"(p = {p_value:.4f} < {alpha})"
        )
    else:
        reason = (
            f"candidate not shown better: Brier {brier_prod:.4f} -> "
            f"{float(loss_cand.mean()):.4f}, p = {p_value:.4f} >= {alpha}"
            + (f" (needed a fall of more than {min_gain})" if min_gain else "")
        )
    return PromotionTest(
        test=PAIRED_BOOTSTRAP_BRIER,
        p_value=p_value,
        alpha=alpha,
        min_gain=min_gain,
        promote=promote,
        effect=effect,
        effect_low=low,
        effect_high=high,
        relative_effect=effect / brier_prod if brier_prod > 0 else 0.0,
        steps=n,
        positives=int(truth.sum()),
        entities=groups,
        production_brier=brier_prod,
        candidate_brier=float(loss_cand.mean()),
        resamples=resamples,
        seed=seed,
        mcnemar_p_value=mcnemar_exact(only_cand, only_prod),
        alarms_only_candidate_right=only_cand,
        alarms_only_production_right=only_prod,
        threshold=threshold,
        reason=reason,
    )


def _refused_empty(
    threshold: float, alpha: float, min_gain: float, resamples: int, seed: int, entities: int
) -> PromotionTest:
    nan = math.nan
    return PromotionTest(
        PAIRED_BOOTSTRAP_BRIER, 1.0, alpha, min_gain, False, nan, nan, nan, nan, 0, 0, entities,
        nan, nan, resamples, seed, 1.0, 0, 0, threshold,
        "no labelled step scored by both versions: nothing to compare",
    )  # fmt: skip
