"""FAILURE_RISK from the local trend: will a capacity-bound signal run out within the horizon?

An OOM or a full disk builds up in minutes, faster than an hours-scale capacity model
(:class:`~models.bottleneck.ExhaustionModel`) follows. :class:`LocalTrendRisk` reads the
least-squares slopes of an entity's 5-minute and 15-minute windows (Prometheus'
``predict_linear`` over two ranges, computed once by :mod:`models.features` for every
metric), and calls the risk the probability that the headroom is gone within ``horizon_s``:
the two windows' times to exhaustion bracket the estimate, whose spread is the uncertainty.

It keeps no state of its own: the windows are its memory. Its verb, :meth:`assess`, reads
the window statistics of many series at once; :meth:`LocalTrendRisk.drivers` says what drove
each risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from models.base import FloatArray
from models.features import statistic


@dataclass(frozen=True)
class RiskAssessment:
    """Per series: the risk, when (``eta`` seconds, bracketed by ``lower``/``upper``), and
    whether the signal is rising on a trend or already exhausted. Not rising: risk 0 and
    ``eta`` +inf."""

    risk: FloatArray
    eta: FloatArray
    lower: FloatArray
    upper: FloatArray
    rising: np.ndarray
    exhausted: np.ndarray


class LocalTrendRisk:
    """The probability that a capacity-bound signal is exhausted within ``horizon_s``.

    Parameters
    ----------
    horizon_s
        The risk's horizon (``FORESIGHT_FAILURE_HORIZON_S``).
    min_r2
        The 15-minute line must explain this share of the variance (half of it for the 5-minute
        line): a trend, not noise.
    min_samples
        Samples the 15-minute window must hold to fit a line.

    Examples
    --------
    >>> from models.features import FeatureWindows, window_statistics
    >>> w = FeatureWindows(max_metrics=1)
    >>> for k in range(90):  # 15 minutes of a disk filling by 1 point a minute
    ...     _ = w.add(k * 10_000, ["disk"], np.array([60.0 + k / 6]))
    >>> grid = window_statistics(w.buckets, w.bucket_ids, w.last, w.ewma, np.array([890_000]))
    >>> risk = LocalTrendRisk(horizon_s=1800).assess(grid, np.array([100.0]))
    >>> round(float(risk.eta[0] / 60)), round(float(risk.risk[0]), 2)
    (25, 0.9)
    >>> LocalTrendRisk.DRIVERS, np.round(LocalTrendRisk(1800).drivers(grid, np.array([100.0]),
    ...                                                        risk), 2).tolist()
    (('1m:last', '5m:slope', '15m:slope'), [[1.38, -0.6, -0.6]])
    """

    name = "local_trend"
    version = "1"
    state_size = 0
    DRIVERS: tuple[str, ...] = ("1m:last", "5m:slope", "15m:slope")
    """The window statistics :meth:`drivers` attributes a risk to, in its columns' order."""

    def __init__(self, horizon_s: float = 1800.0, min_r2: float = 0.6, min_samples: int = 12):
        self.horizon_s = horizon_s
        self.min_r2 = min_r2
        self.min_samples = min_samples

    def init_state(self, n_series: int) -> FloatArray:
        return np.zeros((n_series, 0))

    def assess(self, grid: FloatArray, capacity: FloatArray) -> RiskAssessment:
        """The risk of each series of ``grid`` (window statistics, one row per series) running
        out of ``capacity`` (per series; NaN: not capacity-bound, never at risk)."""
        last = statistic(grid, "last", "1m")
        slopes = np.stack([statistic(grid, "slope", w) for w in ("5m", "15m")], axis=-1)
        fits = np.stack([statistic(grid, "r2", w) for w in ("5m", "15m")], axis=-1)
        evidence = statistic(grid, "count", "15m")
        headroom = capacity - last
        bound = np.isfinite(capacity) & np.isfinite(last)
        with np.errstate(invalid="ignore", divide="ignore"):
            times = headroom[:, None] / slopes
            rising = (
                bound
                & (np.nan_to_num(slopes) > 0).all(axis=-1)
                & (np.nan_to_num(fits[:, 1]) >= self.min_r2)
                & (np.nan_to_num(fits[:, 0]) >= self.min_r2 / 2)
                & (evidence >= self.min_samples)
            )
            eta = np.sqrt(times[:, 0] * times[:, 1])
            sigma = np.maximum(np.abs(times[:, 0] - times[:, 1]) / 2, 0.15 * eta)
            z = (self.horizon_s - eta) / sigma
        rising &= np.isfinite(z)  # a degenerate fit (no spread, no headroom) says nothing
        exhausted = bound & (headroom <= 0)
        risk = np.where(rising, ndtr(np.nan_to_num(z)), 0.0)
        risk = np.where(exhausted, 1.0, risk)
        eta = np.where(exhausted, 0.0, np.where(rising, eta, math.inf))
        lower = np.where(rising, np.maximum(np.fmin(times[:, 0], times[:, 1]), 0.0), math.inf)
        upper = np.where(rising, np.fmax(times[:, 0], times[:, 1]), math.inf)
        lower = np.where(exhausted, 0.0, lower)
        upper = np.where(exhausted, 0.0, upper)
        return RiskAssessment(risk, eta, lower, upper, rising, exhausted)

    def drivers(
        self, grid: FloatArray, capacity: FloatArray, assessment: RiskAssessment
    ) -> FloatArray:
        """What drove each risk, one column per statistic of :data:`DRIVERS`.

        The estimated time to exhaustion is ``headroom / sqrt(slope_5m * slope_15m)``, so
        ``log(horizon / eta)``, above 0 when exhaustion comes within the horizon, is exactly
        the sum of three terms: ``-log(headroom / capacity)`` for the level, and
        ``log(slope * horizon / capacity) / 2`` for each window's slope (the share of the
        capacity that slope would use within the horizon). Those terms are the drivers. An
        exhausted series owes its risk to its level alone (+1); a series not at risk has
        no drivers (zeros).
        """
        last = statistic(grid, "last", "1m")
        slopes = np.stack([statistic(grid, "slope", w) for w in ("5m", "15m")], axis=-1)
        out = np.zeros((len(last), len(self.DRIVERS)))
        rising = assessment.rising & ~assessment.exhausted
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, 0] = -np.log((capacity - last) / capacity)
            out[:, 1:] = np.log(slopes * self.horizon_s / capacity[:, None]) / 2
        out = np.where(rising[:, None] & np.isfinite(out), out, 0.0)
        out[assessment.exhausted] = (1.0, 0.0, 0.0)
        return out
