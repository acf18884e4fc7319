"""Time to exhaustion of a resource, and which of an entity's resources saturates first.

The baseline is Prometheus' ``predict_linear``: an ordinary least-squares line through the
samples of a range window, extrapolated. It has three weaknesses on real usage series: a
daily swing inside the window reads as a trend (a 6 h window over the morning ramp "fills" a
disk that is flat day over day), one spike tilts the line, and it gives no interval, so a
noisy flat series and a steady fill look equally sure.

:class:`ExhaustionModel` fixes each in a fixed-size online state per series:

- **daily harmonics** (sines and cosines of the time of day, three by default) are fitted
  jointly with the line, so the daily swing is explained by them and the slope is that of the
  deseasonalised level; fitting them jointly, rather than subtracting a separately learned
  profile, avoids the profile and the line chasing each other while both are young;
- the fit is **recursive least squares with exponential forgetting** (by elapsed event time,
  about a day by default), with the time origin moved to the newest point at each step so the
  numbers stay small at epoch-scale times; each new value is **Huber-clipped** against a
  running median absolute residual, so spikes barely move the line;
- a **slope and level standard error** from the fit's covariance, the weighted residual
  variance and the effective sample size, inflated for the residuals' lag-one
  autocorrelation (usage noise is rarely independent), gives the interval on the time to
  exhaustion.

The time to exhaustion is that of the deseasonalised trend line: the daily peak rides above
it, so the first touch of the capacity may come up to a day earlier on a strongly seasonal
series. A series counts as trending toward its capacity only when its slope is positive at the
interval's confidence; otherwise the time is ``inf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from models.base import FloatArray

DAY_MS = 86_400_000
MAX_HARMONICS = 12
"""Most daily harmonics a model may fit (periods down to two hours)."""
WARMUP_PER_COEFFICIENT = 4
"""Points per fitted coefficient before spikes are clipped: until then the fit is unsettled."""
PRIOR_VARIANCE = 1e6
"""Initial covariance of the coefficients: a ridge so weak that a few hours of data decide."""
MAX_AUTOCORRELATION = 0.95
"""Cap on the residuals' lag-one autocorrelation used to inflate the slope's error."""

# Per-series scalars at the head of the state row; the coefficients and their covariance follow.
_SCALARS = 8
_COUNT, _LAST_MS, _WEIGHT, _WEIGHT_SQ, _SCALE = range(5)
_LAST_RESIDUAL, _RESIDUAL_LAG, _RESIDUAL_SQ = range(5, _SCALARS)


def predict_linear(
    times_ms: npt.ArrayLike, values: npt.ArrayLike, at_ms: int, ahead_s: float
) -> FloatArray:
    """Prometheus' ``predict_linear``: the OLS line through the window, ``ahead_s`` after ``at_ms``.

    ``times_ms`` has shape ``(n_points,)``; ``values`` has shape ``(n_points,)`` or
    ``(n_series, n_points)``, sharing the times. NaN values are left out of each series' fit.
    Like Prometheus, the line is anchored at the evaluation time ``at_ms``. A series with
    fewer than two values, or all at one time, gives NaN.
    """
    intercept, slope = _ols_line(times_ms, values, at_ms)
    result: FloatArray = intercept + slope * ahead_s
    return result


def linear_time_to_exhaustion(
    times_ms: npt.ArrayLike, values: npt.ArrayLike, at_ms: int, capacity: npt.ArrayLike
) -> FloatArray:
    """Seconds after ``at_ms`` until the ``predict_linear`` line reaches ``capacity``.

    The baseline :class:`ExhaustionModel` is measured against: the alert rule
    ``predict_linear(x[w], t) > capacity`` solved for ``t``. ``inf`` when the line does not
    rise, 0 when it is already at or past the capacity, NaN when it cannot be fitted.
    """
    intercept, slope = _ols_line(times_ms, values, at_ms)
    cap = np.asarray(capacity, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = np.where(slope > 0, (cap - intercept) / slope, np.inf)
    seconds = np.where(intercept >= cap, 0.0, seconds)
    result: FloatArray = np.where(np.isnan(slope), np.nan, seconds)
    return result


def _ols_line(
    times_ms: npt.ArrayLike, values: npt.ArrayLike, at_ms: int
) -> tuple[FloatArray, FloatArray]:
    """OLS intercept at ``at_ms`` and slope per second, per series, NaN values left out."""
    t = (np.asarray(times_ms, dtype=np.float64) - at_ms) / 1000.0
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if y.shape[-1] != t.shape[-1]:
        raise ValueError(
            f"values have {y.shape[-1]} points per series but times_ms has {t.shape[-1]}"
        )
    present = np.isfinite(y)
    n = present.sum(axis=-1)
    tt = np.where(present, t, 0.0)
    yy = np.where(present, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t = tt.sum(axis=-1) / n
        mean_y = yy.sum(axis=-1) / n
        dt = np.where(present, t - mean_t[:, None], 0.0)
        slope = np.sum(dt * (yy - mean_y[:, None]), axis=-1) / np.sum(dt * dt, axis=-1)
    slope = np.where((n >= 2) & np.isfinite(slope), slope, np.nan)
    intercept = mean_y - slope * mean_t
    shape = np.shape(values)[:-1]
    return intercept.reshape(shape), slope.reshape(shape)


@dataclass(frozen=True)
class Bottleneck:
    """The resource expected to saturate first, with its time to exhaustion and interval."""

    resource: str
    seconds: float
    lower: float
    upper: float


def first_exhausted(
    resources: list[str], seconds: FloatArray, lower: FloatArray, upper: FloatArray
) -> Bottleneck | None:
    """The bottleneck call: the resource with the smallest time to exhaustion.

    ``resources`` names the rows of the other arguments (the output of
    :meth:`ExhaustionModel.time_to_exhaustion` for one entity's resources). ``None`` when no
    resource is trending toward its capacity.
    """
    if len(resources) != len(seconds):
        raise ValueError(f"{len(resources)} resource names for {len(seconds)} times to exhaustion")
    finite = np.flatnonzero(np.isfinite(seconds))
    if finite.size == 0:
        return None
    first = int(finite[np.argmin(seconds[finite])])
    return Bottleneck(
        resources[first], float(seconds[first]), float(lower[first]), float(upper[first])
    )


class ExhaustionModel:
    """Online, seasonality-aware, robust time-to-exhaustion estimate with an interval.

    A recursive least-squares fit with exponential forgetting of
    ``level + slope * t + sum_k (a_k sin + b_k cos)(2 pi k * time of day)``: the daily
    harmonics take the daily swing, so the slope is that of the deseasonalised level. The
    state of each series is a fixed row of ``state_size`` float64 values (80 with the default
    three harmonics).

    Parameters
    ----------
    memory_s
        Time constant of the fit's exponential forgetting, in seconds (default 86400: the
        fit weighs the last day or two). Longer is steadier, shorter follows a change of fill
        rate sooner. Decay is by elapsed event time, so irregular steps are fine.
    harmonics
        Daily harmonics fitted (default 3: periods of 24, 12 and 8 hours); 0 fits a plain
        robust line.
    clip_k
        A new value is clipped at ``clip_k`` running median absolute residuals from the
        current fit before it updates it (default 3), so spikes barely move the line.
    coverage
        Confidence of the interval on the time to exhaustion and of the "trending" call
        (default 0.9).

    Examples
    --------
    >>> import numpy as np
    >>> from models.bottleneck import ExhaustionModel, first_exhausted
    >>> model = ExhaustionModel()
    >>> rng = np.random.default_rng(0)
    >>> state = model.init_state(3)  # memory %, disk %, cpu % of one host
    >>> t0 = 1_700_000_000_000
    >>> for i in range(2 * 288):
    ...     hours = i / 12
    ...     x = np.array([40 + 0.5 * hours, 60 + 0.2 * hours, 30.0]) + rng.normal(0, 1, 3)
    ...     model.learn(state, x, t0 + i * 300_000)
    >>> seconds, lower, upper = model.time_to_exhaustion(state, t0 + i * 300_000, 100.0)
    >>> print(np.round(seconds / 3600, -1))  # truth: 72 h and 152 h, and cpu is flat
    [ 70. 150.  inf]
    >>> bool(lower[0] < 72 * 3600 < upper[0])
    True
    >>> first_exhausted(["memory", "disk", "cpu"], seconds, lower, upper).resource
    'memory'

    References
    ----------
    Haykin, S. (2002), *Adaptive Filter Theory*, ch. 9, for recursive least squares with
    exponential forgetting. Huber, P. J. (1964), "Robust estimation of a location parameter".
    """

    name = "exhaustion_model"
    version = "1.0"

    def __init__(
        self,
        memory_s: float = 86_400.0,
        harmonics: int = 3,
        clip_k: float = 3.0,
        coverage: float = 0.9,
    ) -> None:
        if not memory_s > 0:
            raise ValueError(f"memory_s must be a positive number of seconds, got {memory_s}")
        if not 0 <= harmonics <= MAX_HARMONICS:
            raise ValueError(f"harmonics must be between 0 and {MAX_HARMONICS}, got {harmonics}")
        if not clip_k > 0:
            raise ValueError(f"clip_k must be positive, got {clip_k}")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.memory_s = memory_s
        self.harmonics = harmonics
        self.clip_k = clip_k
        self.coverage = coverage
        self._z = NormalDist().inv_cdf((1.0 + coverage) / 2.0)
        self._p = 2 + 2 * harmonics
        self._theta = _SCALARS
        self._cov = self._theta + self._p
        self._size = self._cov + self._p * self._p

    @property
    def state_size(self) -> int:
        """Floats of state per series: counters, residual statistics, coefficients, covariance."""
        return self._size

    def init_state(self, n_series: int) -> FloatArray:
        """Fresh state for ``n_series`` series (a weak prior: the data decide within hours)."""
        state = np.zeros((n_series, self._size), dtype=np.float64)
        state[:, self._cov :] = (PRIOR_VARIANCE * np.eye(self._p)).ravel()
        return state

    def _features(self, t_ms: int) -> FloatArray:
        """Regressors of a point at ``t_ms`` with the time origin at that point: 1, 0, harmonics."""
        phase = 2.0 * np.pi * (t_ms % DAY_MS) / DAY_MS
        k = np.arange(1, self.harmonics + 1)
        return np.concatenate([[1.0, 0.0], np.sin(k * phase), np.cos(k * phase)])

    def learn(self, state: FloatArray, x: FloatArray, t_ms: int) -> None:
        """Learn one value per series at event time ``t_ms`` (``state`` in place; NaN skipped)."""
        rows = np.flatnonzero(np.isfinite(x))
        if rows.size == 0:
            return
        s = state[rows]
        value = x[rows]
        p = self._p
        first = s[:, _COUNT] == 0
        theta = s[:, self._theta : self._cov]
        theta[:, 0] = np.where(first, value, theta[:, 0])
        cov = s[:, self._cov :].reshape(-1, p, p)

        # Move the time origin to this point: the level absorbs the slope times the elapsed
        # days, and the covariance follows (P <- A P A^T), so times stay small and exact.
        elapsed_ms = np.where(first, 0.0, np.maximum(t_ms - s[:, _LAST_MS], 0.0))
        days = elapsed_ms / DAY_MS
        theta[:, 0] += theta[:, 1] * days
        cov = cov.copy()
        cov[:, 0, :] += days[:, None] * cov[:, 1, :]
        cov[:, :, 0] += days[:, None] * cov[:, :, 1]

        # Huber-clipped recursive least squares with forgetting. The residual is measured in
        # units of its own spread, sqrt(1 + phi' P phi) times the noise's, so a fit that is
        # still uncertain (a young series) is not held back by the clip.
        forget = np.exp(-elapsed_ms / 1000.0 / self.memory_s)
        phi = self._features(t_ms)
        # Row-wise sums rather than matmul: BLAS may round a batch differently from one row,
        # and a series must get the same numbers alone as in a batch.
        cov_phi = np.sum(cov * phi, axis=-1)
        leverage = np.sum(cov_phi * phi, axis=-1)
        spread = np.sqrt(1.0 + leverage)
        residual = (value - np.sum(theta * phi, axis=-1)) / spread
        # The clip's scale is a running median of |residual| (multiplicative steps, so
        # scale-free); while the fit is young it is the plain mean and nothing is clipped.
        count = s[:, _COUNT]
        young = count < WARMUP_PER_COEFFICIENT * p
        scale = s[:, _SCALE]
        size = np.abs(residual)
        s[:, _SCALE] = np.where(
            young,
            scale + (size - scale) / (count + 1.0),
            scale * np.exp(0.02 * np.where(size > scale, 1.0, -1.0)),
        )
        limit = np.where(young, np.inf, self.clip_k * scale)
        clipped = np.clip(residual, -limit, limit)
        gain = cov_phi / (forget + leverage)[:, None]
        theta += gain * (clipped * spread)[:, None]
        cov = (cov - gain[:, :, None] * cov_phi[:, None, :]) / forget[:, None, None]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))

        # Weighted residual statistics for the standard errors (a square past the float range
        # is an infinite variance: no confidence, which is what the interval then says).
        s[:, _WEIGHT] = forget * s[:, _WEIGHT] + 1.0
        s[:, _WEIGHT_SQ] = forget**2 * s[:, _WEIGHT_SQ] + 1.0
        with np.errstate(over="ignore"):
            s[:, _RESIDUAL_SQ] = forget * s[:, _RESIDUAL_SQ] + clipped**2
            s[:, _RESIDUAL_LAG] = forget * s[:, _RESIDUAL_LAG] + clipped * s[:, _LAST_RESIDUAL]
        s[:, _LAST_RESIDUAL] = clipped
        s[:, self._theta : self._cov] = theta
        s[:, self._cov :] = cov.reshape(-1, p * p)
        s[:, _COUNT] += 1
        s[:, _LAST_MS] = float(t_ms)
        state[rows] = s

    def trend(
        self, state: FloatArray, t_ms: int
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Deseasonalised level at ``t_ms``, its standard error, slope per second and its error.

        The errors scale the fit's covariance by the weighted residual variance, by
        ``sum w ** 2 / sum w`` (exponential weights count less than as many equal ones) and by
        ``(1 + rho) / (1 - rho)`` for the residuals' lag-one autocorrelation ``rho``.
        """
        p = self._p
        cov = state[:, self._cov :].reshape(-1, p, p)
        level_at_last = state[:, self._theta]
        slope_per_day = state[:, self._theta + 1]
        days = (t_ms - state[:, _LAST_MS]) / DAY_MS
        weight = state[:, _WEIGHT]
        weight_sq = state[:, _WEIGHT_SQ]
        with np.errstate(divide="ignore", invalid="ignore"):
            n_eff = weight**2 / weight_sq
            sigma2 = state[:, _RESIDUAL_SQ] / weight * n_eff / np.maximum(n_eff - p, 1.0)
            rho = np.nan_to_num(state[:, _RESIDUAL_LAG] / state[:, _RESIDUAL_SQ])
            rho = np.clip(rho, 0.0, MAX_AUTOCORRELATION)
            factor = sigma2 * (weight_sq / weight) * (1.0 + rho) / (1.0 - rho)
        slope_var = factor * cov[:, 1, 1]
        level_var = factor * (cov[:, 0, 0] + 2.0 * days * cov[:, 0, 1] + days**2 * cov[:, 1, 1])
        unknown = n_eff <= p
        level = level_at_last + slope_per_day * days
        level_se = np.where(unknown, np.inf, np.sqrt(np.maximum(level_var, 0.0)))
        slope_se = np.where(unknown, np.inf, np.sqrt(np.maximum(slope_var, 0.0)))
        return level, level_se, slope_per_day / 86_400.0, slope_se / 86_400.0

    def time_to_exhaustion(
        self, state: FloatArray, t_ms: int, capacity: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Seconds after ``t_ms`` until each series' trend reaches ``capacity``, with interval.

        ``capacity`` is a scalar or one value per series (e.g. 100 for a percentage, or a
        configured limit). Returns ``(seconds, lower, upper)``, each ``(n_series,)``:
        ``seconds`` is ``inf`` unless the slope is positive at the ``coverage`` confidence;
        ``lower`` (the earliest plausible) uses the high ends of the level and the slope,
        ``upper`` (the latest) the low ends, ``inf`` when that slope does not rise. A series
        whose level is at or above its capacity at the ``coverage`` confidence gives 0 (one
        above it, but not confidently, ``inf``: no estimate); one that has learned nothing
        gives ``inf`` with a lower bound of 0.
        """
        cap = np.asarray(capacity, dtype=np.float64)
        if cap.ndim > 1 or cap.size not in (1, state.shape[0]):
            raise ValueError(
                f"capacity must be a scalar or one value per series ({state.shape[0]}), "
                f"got shape {cap.shape}"
            )
        level, level_se, slope, slope_se = self.trend(state, t_ms)
        z = self._z
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fast = slope + z * slope_se
            slow = slope - z * slope_se
            seconds = np.where(slow > 0, (cap - level) / slope, np.inf)
            lower = np.where(fast > 0, (cap - level - z * level_se) / fast, np.inf)
            upper = np.where(slow > 0, (cap - level + z * level_se) / slow, np.inf)
        # Reached only when even the low end of the level is at capacity: early on, with
        # the daily harmonics not yet fitted, a level can stray far above the data with a
        # standard error to match, and that says nothing of when, not "now".
        reached = level - z * level_se >= cap
        seconds = np.where(reached, 0.0, np.where(level >= cap, np.inf, seconds))
        lower = np.clip(np.nan_to_num(lower, nan=0.0, posinf=np.inf), 0.0, seconds)
        upper = np.where(reached, 0.0, np.maximum(np.nan_to_num(upper, nan=np.inf), seconds))
        never = state[:, _COUNT] == 0
        seconds = np.where(never, np.inf, seconds)
        return seconds, np.where(never, 0.0, lower), np.where(never, np.inf, upper)
