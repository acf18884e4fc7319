"""Streaming anomaly scoring for metric series, vectorised over many series at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.base import FloatArray, StateArray, as_float32, split_state

# Inputs are clipped here so that squared deviations stay finite in float64. The profiles
# and the context table are stored in float32 (half the bytes): the profiles see values
# rounded to float32 and clipped to its range (beyond 3.4e38 every value looks alike to them,
# and a bucket's variance stops at 3.4e38, deviations of 1.8e19), so a constant series is
# still exactly its own profile.
_VALUE_LIMIT = 1e150
_TINY = 1e-300
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS


def _gaussian_tail(z: FloatArray) -> FloatArray:
    """``P(Z > z)`` for a standard normal ``Z``, accurate far into the tail.

    The complementary error function of Numerical Recipes (``erfcc``, fractional error below
    1.2e-7 everywhere), so the detector needs numpy alone.
    """
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * x)
    poly = (
        -x * x
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    tail: FloatArray = np.where(z >= 0.0, 0.5 * erfc, 1.0 - 0.5 * erfc)
    return tail


# Columns of the per-series state's float64 head: scalars; the short average of the shape
# score and the running mean and variance of that average, and the same for the seasonal
# score. Its float32 bulk holds the daily and the weekly profile (mean, variance, count per
# phase bucket), then the context table and its row totals.
_COUNT, _PREV = 0, 1
_FAST_MEAN, _FAST_VAR, _SLOW_MEAN, _SLOW_VAR, _DIFF_MEAN, _DIFF_VAR = 2, 3, 4, 5, 6, 7
_LOW, _HIGH, _QUIET, _BIN1, _BIN2 = 8, 9, 10, 11, 12
_SIGNALS = 4
_SHORT, _MEAN, _VAR = 13, 14, 15
_SEASON_SHORT, _SEASON_MEAN, _SEASON_VAR = 16, 17, 18
_HEADER = 19


class StreamingAnomalyDetector:
    """Causal anomaly scores from deviations, rarity and novelty, for many series at once.

    Parameters
    ----------
    fast_alpha, slow_alpha, diff_alpha : float
        Exponential forgetting rates of the running mean and variance of the value at a
        short and a long time scale, and of the first difference.
    short_alpha, long_alpha : float
        Rates of the short average of raw scores and of the long-run distribution it is
        compared with (the anomaly likelihood of Ahmad et al.).
    warmup : int
        Points a series must have seen before it scores anything but 0.
    novelty_margin : float
        A value beyond the range seen so far by this fraction of the range is novel.
    alert_level : float
        A score at or above this starts a quiet period.
    quiet_steps : int
        Points after an alert whose score is forced to 0: NAB rewards only the first
        detection of an anomaly window and penalises every extra one.
    rearm_steps, rearm_penalty : int, float
        After the quiet period the score is lowered by ``rearm_penalty``, fading linearly to
        nothing over ``rearm_steps`` points: an episode that outlasts the silence (a noisy
        stretch, a slow recovery) alerts again only on stronger evidence than a fresh
        anomaly needs. 0 for either turns this off.
    bins, context_weight, context_prior, context_cap : int, float, float, float
        The context model: values are binned into ``bins`` over the range seen so far and
        the surprise of a bin after the last two is ``context_weight * (1 - p)``, with ``p``
        estimated from counts smoothed by ``context_prior`` and halved past ``context_cap``.
    combine : {"mean", "max"}
        How the raw signals (deviation from the slow and the fast mean, of the first
        difference, and context surprise) merge into one raw score.
    day_buckets, week_buckets : int
        Phase buckets of the daily and the weekly profile (96: quarter hours; 168: hours).
    season_alpha : float
        Forgetting rate of a profile bucket's mean and variance, per visit of the bucket.
    season_min : int
        Visits a bucket needs before its profile is trusted; until then the daily signal is
        the deviation from the slow mean, and the weekly signal is the daily one.
    calibrated_start : bool
        False (the default, tuned on NAB): the likelihoods' long-run distributions start at
        zero and settle over thousands of points, so the first scored points read high; NAB's
        probation period hides them. True: they are running averages over the second half
        of warm-up (the first half is the signals' own start-up), so scoring starts
        calibrated: what a stream alerting from its first scored step needs.

    Notes
    -----
    Four raw signals of the series' shape, each in ``[0, 1]``, are merged into one raw score;
    its recent average is compared with the long-run distribution of that average (the anomaly
    likelihood of HTM), and the Gaussian tail probability is put on a log scale so that 0.5
    means "one in 100,000". A second likelihood does the same for the seasonal score: the
    deviation of the value from what was usual at the same time of day and of week, so a
    value that is ordinary overall but wrong for its hour (a missing daily peak, a holiday) is
    caught. Each likelihood learns its own normal level, and the score is the larger of the
    two: averaging the seasonal signal with the shape signals would dilute both. A value
    beyond the range seen so far scores 1. All state lives in one row per series (19 float64
    and 1,368 float32 values with the defaults, 5.5 KB), so it is bounded and the score of
    ``n`` series is one vectorised call. ``t_ms`` is used only for the phase of day and week;
    the other signals treat points as steps.

    References
    ----------
    Ahmad, Lavin, Purdy, Agha, "Unsupervised real-time anomaly detection for streaming
    data", Neurocomputing 262 (2017): the anomaly likelihood.

    Examples
    --------
    >>> import numpy as np
    >>> from models.base import score_series
    >>> rng = np.random.default_rng(0)
    >>> values = 10.0 + rng.standard_normal(1000)
    >>> values[800] = 25.0
    >>> scores = score_series(StreamingAnomalyDetector(), values, np.arange(1000) * 60_000)
    >>> round(float(scores[800]), 2), bool(np.median(scores) < 0.1)
    (1.0, True)
    >>> detector = StreamingAnomalyDetector()
    >>> state = detector.init_state(3)
    >>> detector.score_learn(state, np.array([1.0, np.nan, 3.0]), 0)
    array([0., 0., 0.])
    """

    name = "streaming_anomaly"
    version = "3"

    def __init__(
        self,
        fast_alpha: float = 0.05,
        slow_alpha: float = 0.002,
        diff_alpha: float = 0.01,
        short_alpha: float = 0.1,
        long_alpha: float = 0.0003,
        warmup: int = 300,
        novelty_margin: float = 0.02,
        alert_level: float = 0.45,
        quiet_steps: int = 100,
        rearm_steps: int = 400,
        rearm_penalty: float = 0.1,
        bins: int = 8,
        context_weight: float = 1.0,
        context_prior: float = 0.5,
        context_cap: float = 1000.0,
        combine: str = "mean",
        day_buckets: int = 96,
        week_buckets: int = 168,
        season_alpha: float = 0.1,
        season_min: int = 4,
        calibrated_start: bool = False,
    ) -> None:
        for label, rate in (
            ("fast_alpha", fast_alpha),
            ("slow_alpha", slow_alpha),
            ("diff_alpha", diff_alpha),
            ("short_alpha", short_alpha),
            ("long_alpha", long_alpha),
            ("season_alpha", season_alpha),
        ):
            if not 0.0 < rate <= 1.0:
                raise ValueError(f"{label}={rate!r}: a forgetting rate must be in (0, 1]")
        if warmup < 1 or quiet_steps < 0 or rearm_steps < 0 or not rearm_penalty >= 0.0:
            raise ValueError(
                f"warmup={warmup!r}, quiet_steps={quiet_steps!r}, rearm_steps={rearm_steps!r}, "
                f"rearm_penalty={rearm_penalty!r}: warmup must be >= 1, the others >= 0"
            )
        if bins < 2 or combine not in ("max", "mean"):
            raise ValueError(
                f"bins={bins!r}, combine={combine!r}: bins must be >= 2 and combine 'max' or 'mean'"
            )
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.diff_alpha = diff_alpha
        self.short_alpha = short_alpha
        self.long_alpha = long_alpha
        self.warmup = warmup
        self.novelty_margin = novelty_margin
        self.alert_level = alert_level
        self.quiet_steps = quiet_steps
        self.rearm_steps = rearm_steps
        self.rearm_penalty = rearm_penalty if rearm_steps > 0 else 0.0
        self.bins = bins
        self.context_weight = context_weight
        self.context_prior = context_prior
        self.context_cap = context_cap
        if day_buckets < 1 or week_buckets < 1 or season_min < 1:
            raise ValueError(
                f"day_buckets={day_buckets!r}, week_buckets={week_buckets!r}, "
                f"season_min={season_min!r}: each must be >= 1"
            )
        self.combine = combine
        self.day_buckets = day_buckets
        self.week_buckets = week_buckets
        self.season_alpha = season_alpha
        self.season_min = season_min
        self.calibrated_start = calibrated_start
        self._day_at = 0  # columns of the bulk
        self._week_at = self._day_at + 3 * day_buckets
        self._context_at = self._week_at + 3 * week_buckets
        self._contexts = bins * bins
        self._totals_at = self._context_at + self._contexts * bins
        self._bulk_size = self._totals_at + self._contexts

    @property
    def state_size(self) -> int:
        """Values of state per series (the head's and the bulk's)."""
        return _HEADER + self._bulk_size

    def init_state(self, n_series: int) -> StateArray:
        """Fresh state for ``n_series`` series: nothing seen yet."""
        return split_state(n_series, _HEADER, self._bulk_size)

    def score_learn(
        self,
        state: StateArray,
        x: FloatArray,
        t_ms: int | npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64] | None = None,
    ) -> FloatArray:
        """Score one point per series in ``[0, 1]`` against the past, then learn it.

        ``t_ms`` is one event time for every series, or one per series. ``rows`` are the
        rows of ``state`` that hold the series (default: all, in order): only the cells a
        step touches are read and written, so the series of many entities can share one
        large state array.
        """
        with np.errstate(all="ignore"):
            values = np.asarray(x, dtype=np.float64)
            times = np.broadcast_to(np.asarray(t_ms, dtype=np.int64), values.shape)
            at = np.arange(len(values)) if rows is None else np.asarray(rows, dtype=np.int64)
            return self._score_learn(state, values, times, at)

    def _profile(
        self,
        bulk: npt.NDArray[np.float32],
        rows: npt.NDArray[np.int64],
        v: FloatArray,
        times: npt.NDArray[np.int64],
        at: int,
        buckets: int,
        period_ms: int,
        floor2: FloatArray,
    ) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray]:
        """The seasonal signal against one profile, and that profile's updated bucket.

        Returns the signal in ``[0, 1]`` (NaN where the bucket is not trusted yet), the
        column of the bucket's mean, and its new mean, variance and count.
        """
        bucket = (times % period_ms) * buckets // period_ms
        col = at + 3 * bucket
        mean, var, visits = (bulk[rows, col + k].astype(np.float64) for k in range(3))
        z = np.abs(v - mean) / np.sqrt(var + floor2)
        signal = np.where(visits >= self.season_min, np.minimum(z, 10.0) / 10.0, np.nan)
        # A running average over the first visits, then exponential forgetting.
        alpha = np.maximum(self.season_alpha, 1.0 / (visits + 1.0))
        delta = v - mean
        new_mean = np.where(visits == 0, v, mean + alpha * delta)
        new_var = np.where(visits == 0, 0.0, (1.0 - alpha) * (var + alpha * delta * delta))
        return signal, col, new_mean, new_var, visits + 1.0

    def _score_learn(
        self,
        state: StateArray,
        values: FloatArray,
        times: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
    ) -> FloatArray:
        seen = np.isfinite(values)
        v = np.where(seen, np.clip(values, -_VALUE_LIMIT, _VALUE_LIMIT), 0.0)
        head, bulk = state["head"], state["bulk"]
        s = head[rows]  # the scalars; in the bulk, only the cells a step touches
        count = s[:, _COUNT]
        first = count == 0
        low = np.where(first, v, s[:, _LOW])
        high = np.where(first, v, s[:, _HIGH])
        span = high - low
        floor = 1e-3 * span + 1e-9 * np.abs(np.where(first, v, s[:, _SLOW_MEAN]))
        floor2 = floor * floor + _TINY
        diff = np.where(first, 0.0, v - s[:, _PREV])

        raw = np.empty((len(v), _SIGNALS), dtype=np.float64)
        for k, (value, mean_col, var_col) in enumerate(
            ((v, _SLOW_MEAN, _SLOW_VAR), (v, _FAST_MEAN, _FAST_VAR), (diff, _DIFF_MEAN, _DIFF_VAR))
        ):
            z = np.abs(value - s[:, mean_col]) / np.sqrt(s[:, var_col] + floor2)
            raw[:, k] = np.minimum(z, 10.0) / 10.0

        # Order-2 context: how often the current value's bin followed the last two bins.
        b = self.bins
        scaled = (v - low) / np.where(span > 0, span, 1.0)
        bin_now = np.clip(np.floor(b * scaled), 0, b - 1).astype(np.int64)
        context = s[:, _BIN2].astype(np.int64) * b + s[:, _BIN1].astype(np.int64)
        cell = self._context_at + context * b + bin_now
        total_cell = self._totals_at + context
        seen_here = bulk[rows, cell].astype(np.float64)
        total_here = bulk[rows, total_cell].astype(np.float64)
        prob = (seen_here + self.context_prior) / (total_here + self.context_prior * b)
        raw[:, 3] = self.context_weight * (1.0 - prob)
        raw[first] = 0.0

        # Seasonal signal: the mean deviation from the daily and the weekly profile, each
        # falling back to the deviation from the slow mean while its bucket is still new.
        stored = as_float32(v).astype(np.float64)
        daily, day_col, *day_update = self._profile(
            bulk, rows, stored, times, self._day_at, self.day_buckets, _DAY_MS, floor2
        )
        weekly, week_col, *week_update = self._profile(
            bulk, rows, stored, times, self._week_at, self.week_buckets, _WEEK_MS, floor2
        )
        daily = np.where(np.isnan(daily), raw[:, 0], daily)
        weekly = np.where(np.isnan(weekly), daily, weekly)
        seasonal = np.where(first, 0.0, 0.5 * (daily + weekly))

        # Anomaly likelihood (Ahmad et al. 2017): how unusual the recent average raw score is
        # against that average's own long-run distribution, on a log scale.
        combined = raw.max(axis=1) if self.combine == "max" else raw.mean(axis=1)
        short = s[:, _SHORT] + self.short_alpha * (combined - s[:, _SHORT])
        season_short = s[:, _SEASON_SHORT] + self.short_alpha * (seasonal - s[:, _SEASON_SHORT])
        score = np.maximum(
            self._likelihood(short, s[:, _MEAN], s[:, _VAR]),
            self._likelihood(season_short, s[:, _SEASON_MEAN], s[:, _SEASON_VAR]),
        )

        margin = self.novelty_margin * span
        novel = ((v > high + margin) | (v < low - margin)) & (span > 0)
        score = np.where(novel, 1.0, score)
        # The quiet column counts down the silence, then the re-arming period after it.
        quiet = s[:, _QUIET]
        rearming = np.minimum(quiet, self.rearm_steps) / max(self.rearm_steps, 1)
        score = score - self.rearm_penalty * rearming
        live = (count >= self.warmup) & (quiet <= self.rearm_steps)
        score = np.where(live & seen, np.clip(np.nan_to_num(score, nan=0.0), 0.0, 1.0), 0.0)

        out = s.copy()
        out[:, _COUNT] = count + 1.0
        out[:, _PREV] = v
        for mean_col, var_col, alpha, value in (
            (_FAST_MEAN, _FAST_VAR, self.fast_alpha, v),
            (_SLOW_MEAN, _SLOW_VAR, self.slow_alpha, v),
            (_DIFF_MEAN, _DIFF_VAR, self.diff_alpha, diff),
        ):
            delta = value - s[:, mean_col]
            out[:, mean_col] = np.where(first, value, s[:, mean_col] + alpha * delta)
            out[:, var_col] = np.where(
                first, 0.0, (1.0 - alpha) * (s[:, var_col] + alpha * delta * delta)
            )
        if self.calibrated_start:
            # A running average over the second half of warm-up: the first half is the
            # signals' own start-up transient, which would inflate the long-run variance.
            settled = count - self.warmup // 2
            long_alpha = np.where(
                count < self.warmup, 1.0 / np.maximum(settled + 1.0, 1.0), self.long_alpha
            )
        else:
            long_alpha = np.full(len(v), self.long_alpha)
        for average, short_col, mean_col, var_col in (
            (short, _SHORT, _MEAN, _VAR),
            (season_short, _SEASON_SHORT, _SEASON_MEAN, _SEASON_VAR),
        ):
            delta_short = average - s[:, mean_col]
            out[:, mean_col] = s[:, mean_col] + long_alpha * delta_short
            out[:, var_col] = (1.0 - long_alpha) * (s[:, var_col] + long_alpha * delta_short**2)
            out[:, short_col] = average
        out[:, _LOW] = np.minimum(low, v)
        out[:, _HIGH] = np.maximum(high, v)
        out[:, _BIN2] = s[:, _BIN1]
        out[:, _BIN1] = bin_now
        out[:, _QUIET] = np.where(
            score >= self.alert_level,
            self.quiet_steps + self.rearm_steps,
            np.maximum(s[:, _QUIET] - 1.0, 0.0),
        )
        # In the bulk only a few cells per series change (one bucket of each profile, one row
        # of the context table): write those, for the series that had a value, rather than
        # copying whole rows. Counts are exact in float32 up to 2**24 visits of a bucket, and
        # stay there after: only whether a bucket is trusted yet depends on them.
        kept = np.flatnonzero(seen)
        at = rows[kept]
        head[at] = out[kept]
        for col, update in ((day_col, day_update), (week_col, week_update)):
            for offset, column_values in enumerate(update):
                bulk[at, col[kept] + offset] = as_float32(column_values[kept])
        bulk[at, cell[kept]] = seen_here[kept] + 1.0
        bulk[at, total_cell[kept]] = total_here[kept] + 1.0
        full = seen & (total_here + 1.0 > self.context_cap)
        if full.any():
            cols = (self._context_at + context[full] * b)[:, None] + np.arange(b)
            bulk[rows[full, None], cols] *= 0.5
            bulk[rows[full], total_cell[full]] *= 0.5
        return score

    @staticmethod
    def _likelihood(short: FloatArray, mean: FloatArray, var: FloatArray) -> FloatArray:
        """How unusual a recent average is against its own long-run distribution, on a log
        scale (Ahmad et al. 2017): 0.5 is a tail probability of 1e-5, 1 of 1e-10."""
        tail = _gaussian_tail((short - mean) / (np.sqrt(var) + 1e-3))
        likelihood: FloatArray = np.log(tail + 1e-10) / np.log(1e-10)
        return likelihood
