"""The promotion test: a better candidate is promoted, an equal or worse one refused, and the
same inputs always give the same verdict."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models.promotion import PAIRED_BOOTSTRAP_BRIER, mcnemar_exact, promotion_test


def _steps(n: int = 600, seed: int = 3) -> tuple[npt.NDArray[np.int8], list[str]]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.15).astype(np.int8), [f"host-{i % 12}" for i in range(n)]


def _scores(y: npt.NDArray[np.int8], sharpness: float, seed: int) -> npt.NDArray[np.float64]:
    """Probabilities that lean ``sharpness`` of the way from the base rate to the truth."""
    rng = np.random.default_rng(seed)
    noisy = 0.15 + sharpness * (y - 0.15) + rng.normal(0.0, 0.08, len(y))
    return np.clip(noisy, 0.0, 1.0)


def test_a_clearly_better_candidate_is_promoted_with_its_test_effect_and_sample() -> None:
    y, entities = _steps()
    result = promotion_test(
        y, _scores(y, 0.2, 1), _scores(y, 0.8, 2), entities=entities, threshold=0.5
    )
    assert result.promote
    assert result.test == PAIRED_BOOTSTRAP_BRIER
    assert result.p_value < 0.01
    assert result.effect > 0 and result.effect_low > 0
    assert result.candidate_brier < result.production_brier
    assert result.relative_effect == pytest.approx(result.effect / result.production_brier)
    assert (result.steps, result.positives, result.entities) == (600, int(y.sum()), 12)
    assert result.alarms_only_candidate_right > result.alarms_only_production_right
    assert result.mcnemar_p_value < 0.05
    assert "candidate better" in result.reason


def test_an_identical_candidate_is_refused_with_p_one() -> None:
    y, entities = _steps()
    scores = _scores(y, 0.6, 1)
    result = promotion_test(y, scores, scores.copy(), entities=entities)
    assert not result.promote
    assert result.p_value == 1.0
    assert result.effect == 0.0
    assert result.mcnemar_p_value == 1.0


def test_an_equally_good_retrain_is_refused() -> None:
    """Same skill, different noise: no significant difference."""
    y, entities = _steps(seed=9)
    result = promotion_test(y, _scores(y, 0.6, 1), _scores(y, 0.6, 2), entities=entities)
    assert not result.promote
    assert result.p_value >= 0.05
    assert result.effect_low < 0 < result.effect_high


def test_a_worse_candidate_is_refused() -> None:
    y, entities = _steps()
    result = promotion_test(y, _scores(y, 0.8, 1), _scores(y, 0.2, 2), entities=entities)
    assert not result.promote
    assert result.p_value > 0.95
    assert result.effect < 0
    assert "not shown better" in result.reason


def test_a_minimum_gain_refuses_a_consistent_but_tiny_improvement() -> None:
    y, _ = _steps()
    production = _scores(y, 0.8, 1)
    candidate = np.clip(production + np.where(y == 1, 0.002, -0.002), 0, 1)
    assert promotion_test(y, production, candidate).promote
    held = promotion_test(y, production, candidate, min_gain=0.005)
    assert not held.promote and held.p_value == 1.0
    assert "needed a fall of more than 0.005" in held.reason


def test_the_same_seed_gives_the_same_result_and_another_seed_a_close_one() -> None:
    y, entities = _steps()
    production, candidate = _scores(y, 0.55, 1), _scores(y, 0.65, 2)
    first = promotion_test(y, production, candidate, entities=entities, seed=7)
    again = promotion_test(y, production, candidate, entities=entities, seed=7)
    other = promotion_test(y, production, candidate, entities=entities, seed=8)
    assert first == again
    assert other.effect == first.effect  # the point estimate does not depend on the seed
    assert abs(other.p_value - first.p_value) < 0.03


def test_no_common_step_refuses_and_says_why() -> None:
    result = promotion_test([], [], [])
    assert not result.promote and result.steps == 0
    assert "nothing to compare" in result.reason


@pytest.mark.parametrize(
    ("production", "candidate", "message"),
    [([0.1, 0.2], [0.1], "shapes"), ([0.1, np.nan], [0.1, 0.2], "NaN")],
)
def test_mismatched_or_missing_scores_are_refused_with_a_reason(
    production: list[float], candidate: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        promotion_test([0, 1], production, candidate)


def test_mcnemar_is_symmetric_and_exact() -> None:
    assert mcnemar_exact(12, 2) == mcnemar_exact(2, 12)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_too_few_steps_are_refused_however_clear_the_difference() -> None:
    y = np.array([1, 0] * 10)
    result = promotion_test(y, np.full(20, 0.5), y * 0.9 + 0.05)
    assert result.p_value < 0.05 and not result.promote
    assert "needs at least 30" in result.reason
