"""Online seasonal forecasting up to a day ahead, with prediction intervals.

Operations series (CPU, memory, request rates) are mostly a level that shifts now and then,
heavy one-sided spikes, a daily cycle of varying strength, sometimes a weekly one, and rarely a
lasting trend. Mean-based smoothers chase the spikes; a seasonal model applied to a series
without seasonality adds noise. So :class:`SeasonalForecaster` builds a few simple forecasts
from robust pieces and lets each horizon weight them by how well each has been doing lately:

- a **robust level**: the median of the last ``short_window`` deseasonalised values, and the
  median of the last 288 (a day at five minutes): a median ignores spikes, and the mean
  absolute error that MASE and operators care about is minimised by the median, not the mean;
- a **daily profile** of 288 five-minute time-of-day slots and a **weekly profile** of 168
  hour-of-week slots: exponentially smoothed deviations from the day-long level, clipped at a
  few running median deviations so the daily swing gets in and a spike does not. They start
  once a full ring has been seen (a slot's first value is its whole deviation, later ones
  are smoothed) and are used centred on their mean, so a trend or a level shift is carried
  by the level and never printed into the profile as a within-day ramp;
- a **damped trend** of the short level;
- the **seasonal-naive** value (the last value seen at the target's time of day).

Six candidate forecasts combine these (short level; day level; each level plus the profiles;
short level plus trend plus profiles; seasonal naive). For each of six horizon buckets
(1, 3, 12, 36, 96, 288 steps) the model keeps an exponentially weighted mean absolute error of
every candidate, measured online against the forecast that candidate made that many steps
earlier, and blends the candidates with weights proportional to ``mae ** -weight_power``
(horizons between buckets interpolate in log-horizon). Weak seasonality therefore shrinks
toward the level by itself, and short and long horizons can prefer different pieces.

The interval comes from two online quantile trackers per horizon bucket on the blended
forecast's signed error, so it is asymmetric where the errors are (CPU spikes upward), widens
with the horizon as the errors do, and needs no normality assumption. The trackers take large
steps at first (a step that shrinks as one over the number of scores, down to the steady
rate), so a new series' interval covers about as it should within tens of scores, not
hundreds. A horizon whose bucket has not been scored yet (the day-ahead one, for a day) takes
the widest scored bucket's interval, widened by the square root of the horizons' ratio as a
random walk's errors grow; before any score the interval is unknown (NaN), never zero-wide.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.base import FloatArray, StateArray, as_float32, split_state

DAY_SLOTS = 288
"""Time-of-day slots of the daily profile: five minutes each, whatever the series' step."""
SLOT_MS = 86_400_000 // DAY_SLOTS
WEEK_SLOTS = 168
"""Hour-of-week slots of the weekly profile."""
HOUR_MS = 3_600_000
RING = 288
"""Steps of history kept: the longest level window and the longest horizon scored online."""
BUCKETS = np.array([1, 3, 12, 36, 96, 288], dtype=np.int64)
"""Horizons (in steps) at which candidate errors and interval quantiles are tracked."""
N_CANDIDATES = 6
CHUNK = 4096
"""Series a call works on at once: it holds their rows as float64 (13 KB each) and a
few times as much in temporaries, so a large batch goes a few thousand series at a time."""

IntArray = npt.NDArray[np.int64]


def damped_steps(steps: npt.ArrayLike, phi: float) -> FloatArray:
    """Sum of ``phi ** i`` for i in 1..h: how many steps of trend a horizon h adds."""
    h = np.asarray(steps, dtype=np.float64)
    if phi == 1.0:
        return h
    damped: FloatArray = phi * (1.0 - phi**h) / (1.0 - phi)
    return damped


def learned_rows(x: FloatArray, rows: npt.ArrayLike | None) -> tuple[IntArray, IntArray]:
    """The positions of ``x``'s finite values, and the state rows they go to (``rows``, or
    the positions themselves): NaN is skipped by every forecaster's ``learn``."""
    finite = np.flatnonzero(np.isfinite(x))
    return finite, finite if rows is None else np.asarray(rows, dtype=np.int64)[finite]


def horizon_steps(horizons: npt.ArrayLike) -> IntArray:
    """Horizons as steps ahead, refused unless a 1-d array of steps >= 1."""
    steps = np.asarray(horizons, dtype=np.int64)
    if steps.ndim != 1 or np.any(steps < 1):
        raise ValueError(f"horizons must be a 1-d array of steps >= 1, got {horizons!r}")
    return steps


def blend_weights(mae: FloatArray, power: float) -> FloatArray:
    """Blend weights of candidates from their errors (last axis), proportional to
    ``mae ** -power``, scaled so nothing overflows."""
    adjusted = mae + 1e-9 * np.max(mae, axis=-1, keepdims=True) + 1e-300
    inverse = (np.min(adjusted, axis=-1, keepdims=True) / adjusted) ** power
    weights: FloatArray = inverse / np.sum(inverse, axis=-1, keepdims=True)
    return weights


def _finite_median(values: FloatArray) -> FloatArray:
    """The median of each row's non-NaN values (NaN for none), the same numbers as
    ``np.nanmedian(values, axis=1)``: a young series' ring is NaN-padded, and nanmedian's
    masked-array path costs several times this one sort (a full ring takes ``np.median``).
    """
    if not np.isnan(values).any():
        median: FloatArray = np.median(values, axis=1)
        return median
    ordered = np.sort(values, axis=1)  # NaN last
    counts = values.shape[1] - np.count_nonzero(np.isnan(values), axis=1)
    high = counts // 2
    low = np.where(counts % 2 == 1, high, high - 1)
    middle = np.take_along_axis(ordered, np.stack([low, high], axis=1), axis=1)
    median = (0.0 + middle[:, 0] + middle[:, 1]) / 2.0  # summed from 0, as nanmedian does
    median[counts == 0] = np.nan
    return median


def _track_median_abs(current: FloatArray, size: FloatArray) -> FloatArray:
    """One step of a running median of ``size``: up or down by 2%, started at the first size."""
    stepped: FloatArray = current * np.exp(0.02 * np.where(size > current, 1.0, -1.0))
    return np.where(current > 0, stepped, size)


class SeasonalForecaster:
    """Robust-level, daily- and weekly-seasonal online forecaster with horizon-wise blending.

    Implements :class:`models.base.Forecaster`. The state of each series is a fixed row of
    ``state_size`` (1660) values, whatever the length of the stream: 4 float64 (the count,
    the trend and the two running medians of deviations) and 1656 float32 (errors,
    quantiles, profiles and rings), 6.5 KB. It learns values rounded to float32 and computes
    in float64. At steps under five minutes the 288-step ring spans less than a day: the day
    level is then the median of that shorter span, and horizons past 288 steps reuse the
    last bucket's weights and interval.

    Parameters
    ----------
    step_s
        Seconds between the series' points (default 300, NAB's five-minute step). Horizons
        are counted in steps; the step maps a horizon to the time-of-day and hour-of-week
        slots of the profiles and scales the profiles' learning rates to a per-day and
        per-week rate, so one configuration serves series at different steps.
    short_window
        Points in the short robust level, the median of the most recent deseasonalised values
        (default 12: one hour at five minutes). Follows level shifts.
    beta
        Smoothing rate of the trend, an exponential average of the short level's step-to-step
        change (default 0.05).
    phi
        Damping of the trend per step ahead (default 0.99): the trend's total contribution
        levels off at ``phi / (1 - phi)`` steps' worth (about 8 h at five minutes), since
        operations trends rarely last a day.
    gamma
        Per-day learning rate of each daily-profile slot (default 0.2).
    delta
        Per-week learning rate of each weekly-profile slot (default 0.05), applied to what the
        daily profile leaves.
    clip_k
        Deviations are clipped at ``clip_k`` times their running median absolute value before
        they update a profile or the trend (default 3), so a spike does not print into them.
    error_rate
        Rate of the exponentially weighted candidate errors (default 0.01, about the last
        100 points); a new series averages its first errors equally.
    weight_power
        Candidates are blended with weights proportional to ``mae ** -weight_power``
        (default 20: in effect the candidate with the lowest recent error at that horizon,
        hedged only between near ties; on NAB's CPU series MASE fell steadily from a power
        of 1 to about 20, so picking beats averaging there).
    coverage
        Nominal coverage of the prediction interval (default 0.9: the 5% and 95% quantiles
        of the blended forecast's error).
    quantile_rate
        Step of the interval's quantile trackers, as a share of the current mean absolute
        error (default 0.05).
    quantile_warmup
        At a bucket's n-th score the trackers step by at least ``quantile_warmup / n`` times
        the mean absolute error (default 3). Trackers that start at zero with the steady
        step alone take hundreds of scores to open: on NAB's CPU series, 90% intervals
        covered 16% of the truths over their first 10 scores and 67% over scores 50 to 100;
        with the warm-up, 71% and 83%.

    Notes
    -----
    A series that has learned nothing forecasts NaN, and its interval stays NaN until the
    one-step forecast has been scored (two points learned). NaN inputs are skipped (they neither
    advance the ring nor touch the state). Outputs are finite for finite inputs; values
    beyond float32's range (3.4e38 in magnitude) are learned, and forecast, as that.
    Everything is deterministic: no randomness anywhere.

    References
    ----------
    Hyndman, R. J. and Koehler, A. B. (2006), "Another look at measures of forecast accuracy",
    for MASE and why the median matters under absolute error. Gardner, E. S. (1985),
    "Exponential smoothing: the state of the art", for damped trends. Bates, J. M. and
    Granger, C. W. J. (1969), "The combination of forecasts", for inverse-error weighting.

    Examples
    --------
    >>> import numpy as np
    >>> from models.forecast import SeasonalForecaster
    >>> model = SeasonalForecaster()
    >>> rng = np.random.default_rng(0)
    >>> state = model.init_state(2)
    >>> t0 = 1_700_000_000_000
    >>> for i in range(3 * 288):
    ...     t = t0 + i * 300_000
    ...     daily = 10 * np.sin(2 * np.pi * (t % 86_400_000) / 86_400_000)
    ...     x = np.array([50 + daily, 20.0]) + rng.normal(0, 1, 2)
    ...     model.learn(state, x, t)
    >>> mean, lower, upper = model.forecast(state, t, np.array([1, 12, 288]))
    >>> mean.shape
    (2, 3)
    >>> bool(np.all((lower <= mean) & (mean <= upper)))
    True
    >>> bool(abs(mean[1, 2] - 20.0) < 1.0)
    True
    """

    name = "seasonal_forecaster"
    version = "1.0"

    def __init__(
        self,
        step_s: float = 300.0,
        short_window: int = 12,
        beta: float = 0.05,
        phi: float = 0.99,
        gamma: float = 0.2,
        delta: float = 0.05,
        clip_k: float = 3.0,
        error_rate: float = 0.01,
        weight_power: float = 20.0,
        coverage: float = 0.9,
        quantile_rate: float = 0.05,
        quantile_warmup: float = 3.0,
    ) -> None:
        if not step_s > 0:
            raise ValueError(f"step_s must be a positive number of seconds, got {step_s}")
        if not 1 <= short_window <= RING:
            raise ValueError(
                f"short_window must be between 1 and {RING} points, got {short_window}"
            )
        for label, rate in (
            ("beta", beta),
            ("gamma", gamma),
            ("delta", delta),
            ("error_rate", error_rate),
            ("quantile_rate", quantile_rate),
        ):
            if not 0 <= rate <= 1:
                raise ValueError(f"{label} is a rate and must be in [0, 1], got {rate}")
        if not 0 <= phi <= 1:
            raise ValueError(f"phi (trend damping) must be in [0, 1], got {phi}")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        if not quantile_warmup >= 0:
            raise ValueError(f"quantile_warmup must be >= 0, got {quantile_warmup}")
        self.step_s = step_s
        self.short_window = short_window
        self.beta = beta
        self.phi = phi
        self.gamma = gamma
        self.delta = delta
        self.clip_k = clip_k
        self.error_rate = error_rate
        self.weight_power = weight_power
        self.coverage = coverage
        self.quantile_rate = quantile_rate
        self.quantile_warmup = quantile_warmup
        self._step_ms = round(step_s * 1000)
        # A profile slot is visited once per day (week) at steps of five minutes (one hour)
        # or more, and several times at finer steps: split the per-period rate across visits.
        self._gamma_visit = 1.0 - (1.0 - gamma) ** (1.0 / max(1.0, SLOT_MS / self._step_ms))
        self._delta_visit = 1.0 - (1.0 - delta) ** (1.0 / max(1.0, HOUR_MS / self._step_ms))
        self._tau = np.array([(1.0 - coverage) / 2.0, (1.0 + coverage) / 2.0])

        n_buckets = len(BUCKETS)
        self._count = 0
        self._trend = 1
        self._scale = 2
        self._spread = 3
        self._mae = 4
        self._quantiles = self._mae + n_buckets * N_CANDIDATES
        self._daily = self._quantiles + 2 * n_buckets
        self._last_day = self._daily + DAY_SLOTS
        self._weekly = self._last_day + DAY_SLOTS
        self._deseasonalised = self._weekly + WEEK_SLOTS
        self._short_levels = self._deseasonalised + RING
        self._day_levels = self._short_levels + RING
        self._size = self._day_levels + RING

    @property
    def state_size(self) -> int:
        """Floats of state per series: counters, errors, profiles and three 288-step rings."""
        return self._size

    def init_state(self, n_series: int) -> StateArray:
        """Fresh state for ``n_series`` series; unseen profile slots and history are NaN."""
        state = split_state(n_series, self._mae, self._size - self._mae)
        state["bulk"][:, self._daily - self._mae :] = np.nan
        return state

    @staticmethod
    def _profile_mean(state: FloatArray, start: int, slots: int) -> FloatArray:
        """Mean of a profile's seen slots, shape ``(n_series, 1)``: what centring removes."""
        profile = state[:, start : start + slots]
        seen = np.isfinite(profile)
        total = np.sum(np.where(seen, profile, 0.0), axis=1, keepdims=True)
        mean: FloatArray = total / np.maximum(np.sum(seen, axis=1, keepdims=True), 1)
        return mean

    def _damped(self, steps: IntArray) -> FloatArray:
        return damped_steps(steps, self.phi)

    def _weights(self, mae: FloatArray) -> FloatArray:
        return blend_weights(mae, self.weight_power)

    def _candidates(
        self,
        short: FloatArray,
        day: FloatArray,
        trend: FloatArray,
        steps: IntArray,
        season: FloatArray,
        last_day: FloatArray,
    ) -> FloatArray:
        """The six candidate forecasts, stacked on a new last axis (arguments broadcast).

        The short median lags a trend by half its window, hence the trend's extra lag term.
        """
        lag = (self.short_window - 1) / 2.0 + self._damped(steps)
        seasonal = short + season
        return np.stack(
            np.broadcast_arrays(
                short,
                day,
                seasonal,
                day + season,
                seasonal + trend * lag,
                np.where(np.isnan(last_day), seasonal, last_day),
            ),
            axis=-1,
        )

    def _ring_medians(self, s: FloatArray, count: IntArray) -> tuple[FloatArray, FloatArray]:
        """Short and day-long medians of the deseasonalised ring, ``count`` points learned."""
        back = np.mod(count[:, None] - np.arange(1, self.short_window + 1)[None, :], RING)
        recent = s[np.arange(s.shape[0])[:, None], self._deseasonalised + back]
        # The day-long window is the whole ring: a median does not depend on the order.
        ring = s[:, self._deseasonalised : self._deseasonalised + RING]
        return _finite_median(recent), _finite_median(ring)

    def _read(
        self,
        state: StateArray,
        at: IntArray,
        spans: list[tuple[int, int]],
        back: IntArray,
    ) -> FloatArray:
        """Rows ``at`` of ``state`` in :func:`~models.base.as_float64`'s layout, holding only
        what a step reads: the head, the columns ``spans`` (``(start, stop)`` pairs past the
        head) and each level ring's slots ``back`` points before the newest. The other cells
        are left unset: a step reads a tenth of a row's two level rings, and a whole row,
        6.5 KB of float32, would cost more to widen than the step's arithmetic."""
        head, bulk = state["head"][at], state["bulk"]
        s = np.empty((at.size, self._size))
        s[:, : self._mae] = head
        for start, stop in spans:
            s[:, start:stop] = bulk[at, start - self._mae : stop - self._mae]
        count = head[:, self._count].astype(np.int64)
        slots = np.mod(count[:, None] - back[None, :], RING)
        index = np.arange(at.size)[:, None]
        for ring in (self._short_levels, self._day_levels):
            s[index, ring + slots] = bulk[at[:, None], ring - self._mae + slots]
        return s

    def learn(
        self, state: StateArray, x: FloatArray, t_ms: int, rows: IntArray | None = None
    ) -> None:
        """Learn one point per series at event time ``t_ms`` (``state`` in place; NaN skipped).

        ``rows`` are the rows of ``state`` that hold the series (default: all, in order).
        First every candidate's past forecasts for this point (made 1, 3, ..., 288 steps
        ago) are scored, updating the blend weights and the interval quantiles; then the
        profiles, the level ring and the trend take the new point.
        """
        finite, at = learned_rows(x, rows)
        # The model learns the values as its float32 bulk holds them: a value repeated is then
        # exactly what the rings and the last day hold, as in float64, and the candidates'
        # errors on a flat or quantised series stay exact ties, not rounding noise.
        values = as_float32(x[finite]).astype(np.float64)
        for start in range(0, finite.size, CHUNK):
            part = slice(start, start + CHUNK)
            self._learn(state, values[part], t_ms, at[part])

    def _learn(self, state: StateArray, value: FloatArray, t_ms: int, at: IntArray) -> None:
        """Learn ``value`` (all finite) into the rows ``at`` of ``state``."""
        index = np.arange(at.size)
        day_col = self._daily + (t_ms // SLOT_MS) % DAY_SLOTS
        last_day_col = self._last_day + (t_ms // SLOT_MS) % DAY_SLOTS
        week_col = self._weekly + (t_ms // HOUR_MS) % WEEK_SLOTS
        s = self._read(
            state,
            at,
            [
                (self._mae, self._last_day),
                (last_day_col, last_day_col + 1),
                (self._weekly, self._short_levels),
            ],
            BUCKETS,
        )
        count = s[:, self._count].astype(np.int64)
        first = count == 0
        daily = np.nan_to_num(s[:, day_col] - self._profile_mean(s, self._daily, DAY_SLOTS)[:, 0])
        weekly = np.nan_to_num(
            s[:, week_col] - self._profile_mean(s, self._weekly, WEEK_SLOTS)[:, 0]
        )
        trend = s[:, self._trend]

        # Score the forecasts made BUCKETS steps ago. The profiles and trend are today's, not
        # the origin's: they move slowly, and keeping theirs would cost a ring each.
        origin = count[:, None] - BUCKETS[None, :]
        scored = origin >= 0
        back = np.mod(origin, RING)
        candidates = self._candidates(
            s[index[:, None], self._short_levels + back],
            s[index[:, None], self._day_levels + back],
            trend[:, None],
            BUCKETS[None, :],
            (daily + weekly)[:, None],
            s[:, last_day_col, None],
        )
        error = value[:, None, None] - candidates
        n_buckets = len(BUCKETS)
        mae = s[:, self._mae : self._quantiles].reshape(-1, n_buckets, N_CANDIDATES)
        blended_error = np.sum(self._weights(mae) * error, axis=-1)
        seen = np.maximum(origin + 1, 1).astype(np.float64)
        rate = np.maximum(self.error_rate, 1.0 / seen)[:, :, None]
        new_mae = np.where(scored[:, :, None], mae + rate * (np.abs(error) - mae), mae)
        s[:, self._mae : self._quantiles] = new_mae.reshape(-1, n_buckets * N_CANDIDATES)
        quantiles = s[:, self._quantiles : self._daily].reshape(-1, n_buckets, 2)
        gain = np.maximum(self.quantile_rate, self.quantile_warmup / seen)
        step = gain * np.sum(self._weights(new_mae) * new_mae, axis=-1)
        below = blended_error[:, :, None] <= quantiles
        moved = quantiles + step[:, :, None] * (self._tau - below)
        s[:, self._quantiles : self._daily] = np.where(
            scored[:, :, None], moved, quantiles
        ).reshape(-1, 2 * n_buckets)

        # Learn the point. Two running medians of absolute deviations (multiplicative steps,
        # so they are scale-free): ``scale``, of the one-step residual, bounds the trend's
        # input; ``spread``, of the deviation from the day's level, bounds what a profile
        # slot takes in, wide enough for the daily swing but not for a spike.
        short = np.where(first, value, s[index, self._short_levels + np.mod(count - 1, RING)])
        scale = _track_median_abs(s[:, self._scale], np.abs(value - short - daily - weekly))
        s[:, self._scale] = scale
        ref = np.where(first, value, s[index, self._day_levels + np.mod(count - 1, RING)])
        spread = _track_median_abs(s[:, self._spread], np.abs(value - ref - weekly))
        s[:, self._spread] = spread
        limit = self.clip_k * spread
        # The profiles start once the ring holds a full window, so the day's level they are
        # measured from is not itself still filling (on a trend, it would lag more and more
        # through the first day and print a ramp into the profile).
        learning = count >= RING
        daily_raw = s[:, day_col]
        to_daily = np.clip(value - ref - weekly - np.nan_to_num(daily_raw), -limit, limit)
        s[:, day_col] = np.where(
            learning,
            np.where(np.isnan(daily_raw), to_daily, daily_raw + self._gamma_visit * to_daily),
            daily_raw,
        )
        weekly_raw = np.nan_to_num(s[:, week_col])
        to_weekly = np.clip(value - ref - np.nan_to_num(s[:, day_col]) - weekly_raw, -limit, limit)
        s[:, week_col] = np.where(
            learning, weekly_raw + self._delta_visit * to_weekly, s[:, week_col]
        )
        s[:, last_day_col] = value
        slot = count % RING
        s[index, self._deseasonalised + slot] = value - daily - weekly
        s[:, self._count] = count + 1
        new_short, new_day = self._ring_medians(s, count + 1)
        trend_limit = self.clip_k * scale
        change = np.where(first, 0.0, np.clip(new_short - short, -trend_limit, trend_limit))
        s[:, self._trend] = trend + self.beta * (change - trend)
        s[index, self._short_levels + slot] = new_short
        s[index, self._day_levels + slot] = new_day
        # Write back what a point changes: the head, errors and quantiles, one slot of each
        # profile and of the last day, and the rings' newest slot.
        state["head"][at] = s[:, : self._mae]
        bulk, head = state["bulk"], self._mae
        bulk[at, : self._daily - head] = as_float32(s[:, self._mae : self._daily])
        for col in (day_col, last_day_col, week_col):
            bulk[at, col - head] = as_float32(s[:, col])
        for ring in (self._deseasonalised, self._short_levels, self._day_levels):
            bulk[at, ring - head + slot] = as_float32(s[index, ring + slot])

    def forecast(
        self,
        state: StateArray,
        t_ms: int,
        horizons: npt.NDArray[np.int64],
        rows: IntArray | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper ``horizons`` steps (each >= 1) after the last point, at ``t_ms``.

        Each output has shape ``(n_series, len(horizons))``, for the series in ``rows`` of
        ``state`` (default: all, in order); ``lower`` and ``upper`` bound the central
        ``coverage`` share of the errors seen at that horizon.
        """
        steps = horizon_steps(horizons)
        at = np.arange(state.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        targets = self._last_day + ((t_ms + steps * self._step_ms) // SLOT_MS) % DAY_SLOTS
        read = [(self._mae, self._last_day), (self._weekly, self._deseasonalised)]
        read += [(col, col + 1) for col in np.unique(targets).tolist()]
        parts = [
            self._forecast(
                self._read(state, at[start : start + CHUNK], read, BUCKETS[:1]), t_ms, steps
            )
            for start in range(0, max(at.size, 1), CHUNK)
        ]
        mean, lower, upper = (np.concatenate(out) for out in zip(*parts, strict=True))
        return mean, lower, upper

    def _forecast(
        self, state: FloatArray, t_ms: int, steps: IntArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        target = t_ms + steps * self._step_ms
        count = state[:, self._count].astype(np.int64)
        last = np.mod(count - 1, RING)
        index = np.arange(state.shape[0])
        season = np.nan_to_num(
            state[:, self._daily + (target // SLOT_MS) % DAY_SLOTS]
            - self._profile_mean(state, self._daily, DAY_SLOTS)
        )
        season += np.nan_to_num(
            state[:, self._weekly + (target // HOUR_MS) % WEEK_SLOTS]
            - self._profile_mean(state, self._weekly, WEEK_SLOTS)
        )
        candidates = self._candidates(
            state[index, self._short_levels + last][:, None],
            state[index, self._day_levels + last][:, None],
            state[:, self._trend, None],
            steps[None, :],
            season,
            state[:, self._last_day + (target // SLOT_MS) % DAY_SLOTS],
        )
        candidates[count == 0] = np.nan

        # Horizons between buckets interpolate the buckets' weights and quantiles linearly in
        # log-horizon; beyond the last bucket they use its values.
        n_buckets = len(BUCKETS)
        position = np.interp(
            np.log(steps.astype(np.float64)),
            np.log(BUCKETS.astype(np.float64)),
            np.arange(n_buckets, dtype=np.float64),
        )
        lo_bucket = np.floor(position).astype(np.int64)
        hi_bucket = np.minimum(lo_bucket + 1, n_buckets - 1)
        share = (position - lo_bucket)[None, :, None]
        mae = state[:, self._mae : self._quantiles].reshape(-1, n_buckets, N_CANDIDATES)
        weights = self._weights(mae)
        weights = weights[:, lo_bucket] * (1.0 - share) + weights[:, hi_bucket] * share
        tracked = state[:, self._quantiles : self._daily].reshape(-1, n_buckets, 2)
        quantiles = tracked[:, lo_bucket] * (1.0 - share) + tracked[:, hi_bucket] * share
        # A bucket is scored once the series has run past its horizon. An interval that needs
        # an unscored bucket borrows the widest scored one's, widened by the square root of
        # the horizons' ratio; with no bucket scored it is unknown.
        scored = np.sum(count[:, None] > BUCKETS[None, :], axis=1)
        widest = np.maximum(scored - 1, 0)
        widen = np.sqrt(np.minimum(steps, BUCKETS[-1])[None, :] / BUCKETS[widest][:, None])
        borrowed = tracked[index, widest][:, None, :] * widen[..., None]
        quantiles = np.where((hi_bucket[None, :] < scored[:, None])[..., None], quantiles, borrowed)
        quantiles[scored == 0] = np.nan
        mean: FloatArray = np.sum(weights * candidates, axis=-1)
        # The interval always holds the mean, even while the error quantiles are one-sided.
        lower = mean + np.minimum(quantiles[..., 0], 0.0)
        upper = mean + np.maximum(quantiles[..., 1], 0.0)
        return mean, lower, upper
