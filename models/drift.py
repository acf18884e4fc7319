"""Drift detection for batch models: on prediction error, and on feature distributions.

Two detectors, both vectorised over many series with their state in one float64 array per
detector (the layout of :mod:`models.base`), so a worker watches every series of every entity
with one call per step and the state stays bounded however long the stream runs:

* :class:`PageHinkley` watches a stream of errors (say, the Brier error ``(p - y)^2`` of each
  prediction once its label is known) for a change of mean, up or down. Five floats per series.
* :class:`FeatureDrift` compares the recent distribution of each feature with the one the
  model was trained on (a :class:`FeatureReference` saved with the model), by the population
  stability index (PSI) and a binned Kolmogorov-Smirnov distance. ``bins`` floats per series.

:func:`assess_drift` turns what both say into a :class:`DriftVerdict` with a "retrain
recommended" flag, and :func:`drift_alert` into an Alert record, through the same hysteresis
and dedup as every other alert (:func:`models.alerts.evaluate`).

Why not ADWIN
-------------
ADWIN (Bifet and Gavaldà, 2007) keeps an exponential histogram of O(log W) buckets per series
whose number varies with the data, which fits a list of Python objects (River's
``river.drift.ADWIN``, one per series) but not a fixed-width state row, and costs a Python call
per series per point. The Page-Hinkley test (equivalently a two-sided CUSUM on standardised
values) has a fixed state, a known trade-off between delay and false alarms (Siegmund's
approximation: with the defaults ``delta=0.5`` and ``threshold=12`` the mean run length
between false alarms of a stationary Gaussian series is about 10^6 points per side, and a
shift of two standard deviations is detected in about 9 points, one of one standard deviation
in about 26), and vectorises. It assumes roughly Gaussian, independent values: feed it errors
averaged over a step or a few predictions, not raw squared errors, whose heavy tail would
raise false alarms. For feature
distributions a mean test is the wrong tool (a variance or shape change matters too), hence
the histogram distances against the training distribution, with exponentially decayed counts
as a bounded sliding window.

References
----------
Page, "Continuous inspection schemes", Biometrika 41 (1954). Siegmund, "Sequential Analysis"
(1985), for the run-length approximation. Yurdakul, "Statistical properties of population
stability index" (2018), for the usual PSI levels (0.1: moderate, 0.25: significant shift).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.alerts import AlertRule, AlertState, evaluate
from models.base import FloatArray

Record = dict[str, Any]
BoolArray = npt.NDArray[np.bool_]

# Page-Hinkley state columns.
_N, _MEAN, _M2, _UP, _DOWN = range(5)

#: Fires when :attr:`DriftVerdict.score` reaches 1 (a drift), clears below 0.5.
DRIFT_RULE = AlertRule(
    name="model_drift",
    kind="DRIFT",
    threshold=1.0,
    clear=0.5,
    for_steps=1,
    resolve_steps=30,
    severity="WARNING",
    summary="{entity}: drift in {metric} (score {value:.2f}); retraining is recommended",
)


class PageHinkley:
    """Two-sided Page-Hinkley test for a change in the mean of many series.

    Each new value is standardised with the running mean and variance of its series (before
    the value is learned), and two cumulative sums collect the excess above ``delta``
    standard deviations in each direction; a sum above ``threshold`` is a drift. The series
    then starts afresh (warm-up included), so a lasting shift is reported once.

    Parameters
    ----------
    delta : float
        Smallest shift worth detecting, in standard deviations, halved (CUSUM's ``k``).
    threshold : float
        Height of a cumulative sum that calls a drift (CUSUM's ``h``): larger is fewer false
        alarms and later detections.
    warmup : int
        Points a series learns before it is tested.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = PageHinkley()
    >>> state = detector.init_state(2)
    >>> series = rng.normal(0.0, 1.0, size=(600, 2))
    >>> series[400:, 1] += 3.0  # series 1 shifts by three standard deviations at point 400
    >>> first = [None, None]
    >>> for i, x in enumerate(series):
    ...     for s in np.flatnonzero(detector.update(state, x)):
    ...         first[s] = first[s] or i
    >>> first[0] is None, 400 <= first[1] < 410
    (True, True)
    """

    name = "page_hinkley"
    version = "1"

    def __init__(self, delta: float = 0.5, threshold: float = 12.0, warmup: int = 100) -> None:
        if delta < 0 or threshold <= 0 or warmup < 2:
            raise ValueError(
                f"PageHinkley needs delta >= 0, threshold > 0 and warmup >= 2; got delta="
                f"{delta}, threshold={threshold}, warmup={warmup}"
            )
        self.delta = delta
        self.threshold = threshold
        self.warmup = warmup

    @property
    def state_size(self) -> int:
        return 5

    def init_state(self, n_series: int) -> FloatArray:
        return np.zeros((n_series, self.state_size))

    def update(self, state: FloatArray, x: FloatArray) -> BoolArray:
        """Learn one value per series (``state`` in place); True where a drift is detected.

        NaN means "no value this step": the series is left as it was.
        """
        seen = np.isfinite(x)
        n = state[:, _N]
        tested = seen & (n >= self.warmup)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(state[:, _M2] / np.maximum(n - 1, 1))
            z = np.where(tested & (std > 0), (x - state[:, _MEAN]) / std, 0.0)
        state[:, _UP] = np.where(tested, np.maximum(0.0, state[:, _UP] + z - self.delta), 0.0)
        state[:, _DOWN] = np.where(tested, np.maximum(0.0, state[:, _DOWN] - z - self.delta), 0.0)
        # Welford's running mean and sum of squared deviations.
        n_new = np.where(seen, n + 1, n)
        step = np.where(seen, x - state[:, _MEAN], 0.0)
        state[:, _MEAN] += np.where(seen, step / np.maximum(n_new, 1), 0.0)
        state[:, _M2] += np.where(seen, step * (x - state[:, _MEAN]), 0.0)
        state[:, _N] = n_new
        drift = (state[:, _UP] > self.threshold) | (state[:, _DOWN] > self.threshold)
        state[drift] = 0.0
        return drift


@dataclass(frozen=True)
class FeatureReference:
    """The training distribution of each feature: bin edges and the share in each bin.

    ``edges`` has shape ``(n_features, bins - 1)`` (deciles by default; a value equal to an
    edge falls in the bin above it) and ``proportions`` ``(n_features, bins)``.
    """

    edges: FloatArray
    proportions: FloatArray

    @classmethod
    def fit(cls, matrix: FloatArray, bins: int = 10) -> FeatureReference:
        """Quantile bins of each column of ``matrix`` (rows x features), NaN ignored.

        A column with no finite value gets NaN edges, which every value passes, so it is
        never called drifted.
        """
        if bins < 2:
            raise ValueError(f"a feature reference needs at least 2 bins, got {bins}")
        quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        columns = np.asarray(matrix, dtype=np.float64).T
        edges = np.full((columns.shape[0], bins - 1), np.nan)
        proportions = np.full((columns.shape[0], bins), 1.0 / bins)
        for j, column in enumerate(columns):
            finite = column[np.isfinite(column)]
            if finite.size:
                edges[j] = np.quantile(finite, quantiles)
                counts = np.bincount(_bin(edges[j : j + 1], finite[:, None])[:, 0], minlength=bins)
                proportions[j] = counts / finite.size
        return cls(edges, proportions)

    @property
    def bins(self) -> int:
        return int(self.proportions.shape[1])

    def to_array(self) -> FloatArray:
        """Edges then proportions in one ``(n_features, 2 * bins - 1)`` array (an .npy file)."""
        return np.concatenate([self.edges, self.proportions], axis=1)

    @classmethod
    def from_array(cls, array: FloatArray) -> FeatureReference:
        """The reference :meth:`to_array` packed; raises ValueError on another shape."""
        if array.ndim != 2 or array.shape[1] % 2 != 1 or array.shape[1] < 3:
            raise ValueError(
                f"a feature reference array has shape (features, 2 * bins - 1), got {array.shape}"
            )
        bins = (array.shape[1] + 1) // 2
        return cls(np.array(array[:, : bins - 1]), np.array(array[:, bins - 1 :]))


def _bin(edges: FloatArray, x: FloatArray) -> npt.NDArray[np.intp]:
    """Bin index of ``x`` (rows x features) against each feature's ``edges``."""
    below = np.nan_to_num(edges, nan=np.inf)[None, :, :] <= x[..., None]
    bins: npt.NDArray[np.intp] = below.sum(axis=-1).astype(np.intp)
    return bins


class FeatureDrift:
    """Recent feature distributions against the training ones: PSI and binned KS distance.

    The state of each feature is its recent histogram over the reference's bins, as counts
    that decay by ``1 - 1 / window`` per update: a sliding window of about ``window`` values
    in bounded memory.

    Parameters
    ----------
    reference : FeatureReference
        The training distribution (saved with the model by :mod:`models.training`).
    window : int
        Effective number of recent values compared.
    min_count : float
        Values a feature needs in its window before it is judged.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> reference = FeatureReference.fit(rng.normal(size=(5000, 2)))
    >>> drift = FeatureDrift(reference, window=500)
    >>> state = drift.init_state()
    >>> recent = rng.normal(size=(1000, 2))
    >>> recent[:, 1] += 1.5  # feature 1 moved
    >>> drift.update_many(state, recent)
    >>> psi, ks = drift.distances(state)
    >>> bool(psi[0] < 0.1), bool(psi[1] > 0.25)
    (True, True)
    """

    def __init__(self, reference: FeatureReference, window: int = 1000, min_count: float = 100.0):
        if window < 2 or min_count <= 0:
            raise ValueError(f"FeatureDrift needs window >= 2 and min_count > 0, got {window}")
        self.reference = reference
        self.window = window
        self.min_count = min_count

    def init_state(self) -> FloatArray:
        """Empty recent histograms, ``(n_features, bins)``."""
        return np.zeros_like(self.reference.proportions)

    def update(self, state: FloatArray, x: FloatArray) -> None:
        """Count one value per feature (``x`` of shape ``(n_features,)``; NaN skipped)."""
        self.update_many(state, x[None, :])

    def update_many(self, state: FloatArray, rows: FloatArray) -> None:
        """Count ``rows`` (``(n_rows, n_features)``) in order, as that many updates would."""
        keep = 1.0 - 1.0 / self.window
        n = rows.shape[0]
        # Row i is decayed by the n - 1 - i updates after it.
        weights = keep ** np.arange(n - 1, -1, -1, dtype=np.float64)
        bins = _bin(self.reference.edges, rows)
        finite = np.isfinite(rows)
        state *= keep**n
        for j in range(state.shape[0]):
            state[j] += np.bincount(
                bins[finite[:, j], j], weights[finite[:, j]], minlength=state.shape[1]
            )

    def distances(self, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        """PSI and binned KS distance of each feature; NaN until ``min_count`` values."""
        count = state.sum(axis=1)
        eps = 1e-4  # keeps an empty bin's log finite (the usual PSI smoothing)
        recent = (state + eps) / (count[:, None] + eps * state.shape[1])
        expected = np.maximum(self.reference.proportions, eps)
        psi = ((recent - expected) * np.log(recent / expected)).sum(axis=1)
        ks = np.abs(np.cumsum(recent - expected, axis=1)).max(axis=1)
        judged = count >= self.min_count
        return np.where(judged, psi, np.nan), np.where(judged, ks, np.nan)


@dataclass(frozen=True)
class DriftVerdict:
    """What the detectors say about one model, and whether to retrain it.

    ``score`` is the larger of the worst PSI over ``psi_limit`` and the share of error
    series in drift over ``error_share_limit``: 1 or more is a drift.
    """

    score: float
    retrain_recommended: bool
    worst: str
    reasons: tuple[str, ...]


def assess_drift(
    error_drift: BoolArray,
    error_series: Sequence[str],
    psi: FloatArray,
    features: Sequence[str],
    psi_limit: float = 0.25,
    error_share_limit: float = 0.2,
) -> DriftVerdict:
    """Combine Page-Hinkley alarms on prediction errors and PSI of features into a verdict.

    Examples
    --------
    >>> import numpy as np
    >>> verdict = assess_drift(np.array([False, False, False, False, True]),
    ...                        ["web-1", "web-2", "web-3", "web-4", "web-5"],
    ...                        np.array([0.02, 0.4]), ["cpu:5m:mean", "mem:1h:max"])
    >>> verdict.retrain_recommended, verdict.worst, round(verdict.score, 2)
    (True, 'mem:1h:max', 1.6)
    """
    if len(error_drift) != len(error_series) or len(psi) != len(features):
        raise ValueError(
            f"assess_drift got {len(error_drift)} error flags for {len(error_series)} series "
            f"and {len(psi)} PSI values for {len(features)} features; they must pair up"
        )
    reasons = []
    shifted = [(float(v), name) for v, name in zip(psi, features, strict=True) if v >= psi_limit]
    for value, name in sorted(shifted, reverse=True):
        reasons.append(f"feature {name}: PSI {value:.2f} >= {psi_limit}")
    drifting = [name for flag, name in zip(error_drift, error_series, strict=True) if flag]
    if drifting:
        reasons.append(f"prediction error changed on {len(drifting)} series: {drifting[:5]}")
    finite = np.nan_to_num(np.asarray(psi, dtype=np.float64), nan=0.0)
    feature_score = float(finite.max()) / psi_limit if len(finite) else 0.0
    share = len(drifting) / len(error_series) if len(error_series) else 0.0
    error_score = share / error_share_limit
    if feature_score >= error_score:
        worst = features[int(np.argmax(finite))] if len(finite) else ""
    else:
        worst = "prediction_error"
    score = max(feature_score, error_score)
    return DriftVerdict(score, score >= 1.0, worst, tuple(reasons))


def drift_alert(
    verdict: DriftVerdict,
    state: AlertState,
    model: str,
    version: str,
    t_ms: int,
    content_hash: str = "",
    rule: AlertRule = DRIFT_RULE,
) -> Record | None:
    """An Alert record when a model's drift starts or ends (``state`` advanced in place).

    The alert's entity is ``model/NAME``, its labels carry the version (and its
    ``content_hash`` when given, so a retrain controller knows which registry's version
    drifted) and ``retrain: "true"``/``"false"``; it fires when the verdict's score reaches
    1 and resolves after 30 calm assessments (:data:`DRIFT_RULE`).

    Examples
    --------
    >>> from models.alerts import AlertState
    >>> verdict = DriftVerdict(1.6, True, "cpu:5m:mean", ("feature cpu:5m:mean: PSI 0.40",))
    >>> alert = drift_alert(verdict, AlertState(), "failure_risk", "3", 1_700_000_000_000)
    >>> alert["status"], alert["entity"], alert["labels"]["retrain"]
    ('FIRING', 'model/failure_risk', 'true')
    """
    labels = {
        "model": model,
        "version": version,
        "retrain": "true" if verdict.retrain_recommended else "false",
    }
    if content_hash:
        labels["content_hash"] = content_hash
    return evaluate(rule, state, f"model/{model}", verdict.score, verdict.worst, t_ms, labels)


class ErrorDriftWatch:
    """Page-Hinkley on each entity's prediction error, for one model, assessed now and then.

    The stream calls :meth:`observe` whenever an entity's predictions meet their outcome,
    and :meth:`assess` periodically: the share of entities whose error drifted since the last
    assessment is the verdict's error signal (:func:`assess_drift`), and the mean error the
    model's rolling quality.

    Examples
    --------
    >>> watch = ErrorDriftWatch(PageHinkley(warmup=10))
    >>> rng = np.random.default_rng(1)
    >>> for i in range(200):
    ...     for entity in ("a", "b"):
    ...         shift = 4.0 if entity == "b" and i >= 150 else 0.0
    ...         _ = watch.observe(entity, 1.0 + shift + 0.1 * rng.normal())
    >>> verdict = watch.assess()
    >>> verdict.retrain_recommended, verdict.reasons
    (True, ("prediction error changed on 1 series: ['b']",))
    """

    def __init__(self, detector: PageHinkley | None = None, half_life: float = 200.0) -> None:
        self.detector = detector or PageHinkley()
        self.decay = 0.5 ** (1.0 / half_life)
        self.mean_error = math.nan
        self._rows: dict[str, int] = {}
        self._state = self.detector.init_state(0)
        self._drifted: set[str] = set()

    def observe(self, entity: str, error: float) -> bool:
        """Learn one error of ``entity``; True when its error just drifted."""
        if not math.isfinite(error):
            return False
        row = self._rows.get(entity)
        if row is None:
            row = self._rows[entity] = len(self._rows)
            self._state = np.concatenate([self._state, self.detector.init_state(1)])
        drifted = bool(self.detector.update(self._state[row : row + 1], np.array([error]))[0])
        if drifted:
            self._drifted.add(entity)
        previous = error if math.isnan(self.mean_error) else self.mean_error
        self.mean_error = self.decay * previous + (1 - self.decay) * error
        return drifted

    def assess(self) -> DriftVerdict:
        """The verdict over the entities seen, from the drifts since the last assessment."""
        entities = list(self._rows)
        flags = np.array([e in self._drifted for e in entities], dtype=bool)
        self._drifted.clear()
        return assess_drift(flags, entities, np.zeros(0), [])


class FeatureDriftWatch:
    """:class:`FeatureDrift` of one served model version: the feature vectors it scores in,
    a ``model_drift`` alert out when they leave its training distribution.

    The stream feeds it every step's FeatureVector records (:meth:`observe`, aligned to the
    model's features by ``align``) and asks now and then (:meth:`alert`). A new production
    version gets a new watch, with a fresh window and alert episode.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = FeatureReference.fit(rng.normal(size=(2000, 1)))
    >>> align = lambda vectors: np.array([[v["values"][0]] for v in vectors])
    >>> watch = FeatureDriftWatch("failure_risk", "1", "abc", ["cpu:5m:mean"], reference,
    ...                           align, window=200)
    >>> watch.observe([{"values": [x]} for x in rng.normal(size=300)])
    >>> watch.alert(0) is None
    True
    >>> watch.observe([{"values": [x]} for x in rng.normal(3.0, 1.0, size=300)])
    >>> alert = watch.alert(60_000)
    >>> alert["status"], alert["labels"]["metric"], alert["labels"]["content_hash"]
    ('FIRING', 'cpu:5m:mean', 'abc')
    """

    def __init__(
        self,
        model: str,
        version: str,
        content_hash: str,
        features: Sequence[str],
        reference: FeatureReference,
        align: Callable[[Sequence[Record]], FloatArray],
        window: int = 1000,
        psi_limit: float = 0.25,
    ) -> None:
        if reference.edges.shape[0] != len(features):
            raise ValueError(
                f"{model} version {version}: its feature reference has "
                f"{reference.edges.shape[0]} features and the model {len(features)}; retrain it"
            )
        self.model, self.version, self.content_hash = model, version, content_hash
        self.features = list(features)
        self.detector = FeatureDrift(reference, window=window, min_count=min(100.0, window / 2))
        self.align = align
        self.psi_limit = psi_limit
        self.state = self.detector.init_state()
        self.alert_state = AlertState()

    def observe(self, feature_vectors: Sequence[Record]) -> None:
        """Count one step's FeatureVector records."""
        if feature_vectors:
            self.detector.update_many(self.state, self.align(feature_vectors))

    def assess(self) -> DriftVerdict:
        """The verdict of the recent features against the training ones (PSI)."""
        psi, _ = self.detector.distances(self.state)
        return assess_drift(np.zeros(0, dtype=bool), [], psi, self.features, self.psi_limit)

    def alert(self, t_ms: int) -> Record | None:
        """The ``model_drift`` alert when the model's feature drift starts or ends."""
        verdict = self.assess()
        return drift_alert(
            verdict, self.alert_state, self.model, self.version, t_ms, self.content_hash
        )

    def retire(self, t_ms: int) -> Record | None:
        """The resolution of this version's drift alert, when the version stops serving while
        it fires (a version out of production drifts no more); None when it does not fire."""
        if not self.alert_state.firing:
            return None
        calm = DriftVerdict(0.0, False, "", ())
        return drift_alert(
            calm, self.alert_state, self.model, self.version, t_ms, self.content_hash,
            rule=replace(DRIFT_RULE, resolve_steps=1),
        )  # fmt: skip
