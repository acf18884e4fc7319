"""One anomaly score per entity, from how its metrics move together.

Per-metric detectors miss a break in the relations between metrics (CPU up while throughput
drops) until one metric alone looks odd. :class:`EntityAnomalyDetector` standardises each
metric of an entity against its own running mean and variance, keeps a streaming low-rank
model of their covariance (probabilistic PCA: a few principal directions plus an isotropic
residual), and scores each step by the Mahalanobis distance of the standardised vector under
that model. Movement along the learned directions (load raising CPU, network and latency
together) costs little; movement across them (one metric off the others' line) costs a lot.

Real hosts carry awkward metrics beside the smooth ones: counts that step by one now and
then, gauges quantised to a few levels, counters at zero but for a blip, heavy-tailed
spikes. Three rules keep them from reading as broken relations: a metric takes part once it
has moved; its standard deviation is never taken below its resolution (the smallest change
it has shown), so a step of one unit counts as one deviation however long the metric sat
still, not as the ten a near-zero running variance would make of it; and a z-score past
``soft_z`` grows only logarithmically, so one metric's extreme value cannot outweigh the
rest. (On a quiet host with few metrics, a count whose new level lasts can still read as a
break for some minutes, until the covariance model has learned it.)

State is array state like the other online models: a few floats per metric slot (count,
mean, variance, last value, resolution, loadings) in rows of the worker's arena, and a few
per entity (step count, principal variances, residual variance, calibration) in a row of
their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.anomaly import _gaussian_tail
from models.base import FloatArray

IntArray = npt.NDArray[np.int64]

_VALUE_LIMIT = 1e150
_Z_LIMIT = 10.0
_TINY = 1e-12
_FLOOR = 1e-4  # least residual variance of the smoothed z-scores
# Per-metric slot columns; the loadings on the principal directions follow.
_COUNT, _MEAN, _VAR, _SMOOTH, _LAST, _RESOLUTION, _LOADINGS = 0, 1, 2, 3, 4, 5, 6
# A change smaller than this share of a value is float rounding, not a metric's resolution.
_ROUNDING = 1e-9
# Per-entity columns; the principal variances follow.
_STEPS, _RESIDUAL, _CAL_MEAN, _CAL_VAR, _EIGEN = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class EntityScores:
    """One step's entity scores, and every metric's signed contribution to its entity's."""

    scores: FloatArray  # (entities,), in [0, 1]
    contributions: FloatArray  # (metrics,), each entity's summing to its score

    def top(self, start: int, end: int, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` largest contributions (by size) among metrics ``start:end``, as
        (index within the entity, contribution), largest first; none below 0.01."""
        part = self.contributions[start:end]
        order = np.argsort(-np.abs(part), kind="stable")[:n]
        return [(int(i), float(part[i])) for i in order if abs(part[i]) >= 0.01]


class EntityAnomalyDetector:
    """A calibrated anomaly score per entity over its standardised metrics.

    Parameters
    ----------
    components : int
        Principal directions kept per entity (0: the metrics are taken as independent,
        and the score is a chi-square combination of their z-scores).
    mean_alpha : float
        Forgetting rate of each metric's running mean and variance (the standardisation).
    cov_alpha : float
        Forgetting rate of the covariance model of the standardised vector.
    smooth_alpha : float
        Rate of the short average of the per-step statistic the score is read from: a
        lone noisy step scores less than a sustained departure.
    calibration_alpha : float
        Forgetting rate of the long-run mean and variance of that short average, which
        calibrate the score per entity whatever its number of metrics.
    warmup : int
        Steps an entity is learned before it scores anything but 0; the calibration is a
        running average over the second half of them, so scoring starts calibrated.
    metric_warmup : int
        Values a metric needs before it takes part (a new metric joins quietly).
    robust : float
        A step whose squared distance per metric exceeds this teaches the model with
        weight ``robust / distance``, so a fault is not learned as normal while it lasts.
    soft_z : float
        A metric's z-score beyond this counts as ``soft_z + log(1 + excess)``: a spike or a
        heavy-tailed metric moves the score, without one metric deciding it alone.

    Notes
    -----
    The covariance model is ``U diag(lam) U' + s2 (I - U U')``; a step updates it with
    weight ``cov_alpha`` by the eigen-decomposition of the small Gram matrix of
    ``[U sqrt(lam), z]`` (an incremental PCA), and the energy of the dropped directions joins
    the residual ``s2``. It keeps at most one direction fewer than the metrics present, so
    the residual always has a dimension to be measured in: on a host of two metrics, a third
    that starts to move is judged against how far the others stray from their direction,
    not against nothing. The squared Mahalanobis distance is mapped to a normal deviate by
    the Wilson-Hilferty approximation of its chi-square distribution (degrees of freedom:
    the metrics present), averaged over a few steps, and standardised by that average's own
    long-run mean and variance. The score is the Gaussian tail probability of the result on
    a log scale, as the per-metric detector's: 0.5 is a tail probability of 1e-5, 1 of
    1e-10. A metric's contribution is its term ``z_i (P z)_i`` of the squared distance
    (``P`` the precision), scaled so an entity's contributions sum to its score: positive
    terms push the score up, negative ones hold it down.

    References
    ----------
    Tipping, Bishop, "Probabilistic principal component analysis", JRSS B 61 (1999).
    Wilson, Hilferty, "The distribution of chi-square", PNAS 17 (1931).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = EntityAnomalyDetector(warmup=100)
    >>> state, entity = detector.init_state(3), detector.init_entity_state(1)
    >>> starts = np.array([0, 3])
    >>> for _ in range(400):  # three metrics that rise and fall together
    ...     load = rng.normal()
    ...     x = np.array([load, 2 * load, -load]) + 0.1 * rng.normal(size=3)
    ...     calm = detector.score_learn(state, entity, x, starts).scores[0]
    >>> for _ in range(30):  # the second metric falls while the others say it should rise
    ...     broken = detector.score_learn(state, entity, np.array([1.0, -2.0, -1.0]), starts)
    >>> bool(calm < 0.3), bool(broken.scores[0] > 0.9), broken.top(0, 3, 1)[0][0]
    (True, True, 1)
    """

    name = "entity_anomaly"
    version = "1"

    def __init__(
        self,
        components: int = 2,
        mean_alpha: float = 0.003,
        cov_alpha: float = 0.003,
        smooth_alpha: float = 0.05,
        calibration_alpha: float = 0.002,
        warmup: int = 120,
        metric_warmup: int = 10,
        robust: float = 2.0,
        soft_z: float = 3.0,
    ) -> None:
        for label, rate in (
            ("mean_alpha", mean_alpha),
            ("cov_alpha", cov_alpha),
            ("smooth_alpha", smooth_alpha),
            ("calibration_alpha", calibration_alpha),
        ):
            if not 0.0 < rate <= 1.0:
                raise ValueError(f"{label}={rate!r}: a forgetting rate must be in (0, 1]")
        if components < 0 or warmup < 2 or metric_warmup < 1 or robust <= 0 or soft_z <= 0:
            raise ValueError(
                f"components={components!r}, warmup={warmup!r}, metric_warmup="
                f"{metric_warmup!r}, robust={robust!r}, soft_z={soft_z!r}: need components "
                ">= 0, warmup >= 2, metric_warmup >= 1, robust > 0 and soft_z > 0"
            )
        self.components = components
        self.mean_alpha = mean_alpha
        self.cov_alpha = cov_alpha
        self.smooth_alpha = smooth_alpha
        self.calibration_alpha = calibration_alpha
        self.warmup = warmup
        self.metric_warmup = metric_warmup
        self.robust = robust
        self.soft_z = soft_z

    @property
    def state_size(self) -> int:
        """Floats of state per metric slot."""
        return _LOADINGS + self.components

    @property
    def entity_state_size(self) -> int:
        """Floats of state per entity."""
        return _EIGEN + self.components

    def init_state(self, n_series: int) -> FloatArray:
        """Fresh state for ``n_series`` metric slots."""
        return np.zeros((n_series, self.state_size), dtype=np.float64)

    def init_entity_state(self, n_entities: int) -> FloatArray:
        """Fresh state for ``n_entities`` entities."""
        return np.zeros((n_entities, self.entity_state_size), dtype=np.float64)

    def score_learn(
        self,
        state: FloatArray,
        entity_state: FloatArray,
        x: FloatArray,
        starts: npt.ArrayLike,
        rows: npt.ArrayLike | None = None,
        entity_rows: npt.ArrayLike | None = None,
    ) -> EntityScores:
        """Score one step of many entities, then learn it (states in place).

        ``x`` holds every entity's metrics one after the other, entity ``e`` at
        ``starts[e]:starts[e + 1]``; NaN means "no value this step". ``rows`` are the rows
        of ``state`` holding those metric slots and ``entity_rows`` the rows of
        ``entity_state`` holding the entities (default: all, in order). Entities with the
        same number of metrics are scored together, so a batch gives each entity the same
        numbers as scoring it alone.
        """
        values = np.asarray(x, dtype=np.float64)
        bounds = np.asarray(starts, dtype=np.int64)
        counts = np.diff(bounds)
        at = np.arange(len(values)) if rows is None else np.asarray(rows, dtype=np.int64)
        entities = (
            np.arange(len(counts)) if entity_rows is None else np.asarray(entity_rows, np.int64)
        )
        scores = np.zeros(len(counts))
        contributions = np.zeros(len(values))
        with np.errstate(all="ignore"):
            for d in np.unique(counts[counts > 0]).tolist():
                group = np.flatnonzero(counts == d)
                index = bounds[group][:, None] + np.arange(d)  # (entities, d) positions
                series = state[at[index]]
                ent = entity_state[entities[group]]
                score, contribution = self._step(series, ent, values[index])
                state[at[index]] = series
                entity_state[entities[group]] = ent
                scores[group] = score
                contributions[index] = contribution
        return EntityScores(scores, contributions)

    def _step(
        self, series: FloatArray, ent: FloatArray, x: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """One step of a group of entities with the same number of metrics; ``series``
        (entities, metrics, columns) and ``ent`` (entities, columns) are updated in place."""
        k = self.components
        seen = np.isfinite(x)
        v = np.where(seen, np.clip(x, -_VALUE_LIMIT, _VALUE_LIMIT), 0.0)
        count, mean, var = series[..., _COUNT], series[..., _MEAN], series[..., _VAR]
        floor = 1e-3 * np.abs(mean) + 1e-9
        # A metric takes part once it has moved: until then it says nothing about how the
        # metrics move together, and its first step would be measured against no spread.
        # Never narrower than its resolution: a count that sat still for hours and moves by
        # one has moved one deviation, not ten.
        resolution = series[..., _RESOLUTION]
        active = seen & (count >= self.metric_warmup) & (resolution > 0)
        scale = np.sqrt(np.maximum(var, resolution * resolution) + floor * floor)
        z = np.where(active, np.clip(self._soften((v - mean) / scale), -_Z_LIMIT, _Z_LIMIT),
                     0.0)  # fmt: skip
        dof = np.maximum(active.sum(axis=1), 1).astype(np.float64)

        # The multivariate EWMA of the z-scores: a small shift held for a while builds up,
        # a lone noisy step does not.
        smooth = np.where(
            active, series[..., _SMOOTH] + self.smooth_alpha * (z - series[..., _SMOOTH]), 0.0
        )
        loadings = series[..., _LOADINGS:]  # (entities, metrics, k)
        eigen = ent[:, _EIGEN:]
        residual_var = np.maximum(ent[:, _RESIDUAL], _FLOOR)
        projection = np.einsum("emk,em->ek", loadings, smooth)
        residual = np.where(active, smooth - np.einsum("emk,ek->em", loadings, projection), 0.0)
        along = projection / np.maximum(eigen, residual_var[:, None])
        precision_z = residual / residual_var[:, None] + np.einsum("emk,ek->em", loadings, along)
        terms = smooth * precision_z
        distance = np.maximum(terms.sum(axis=1), 0.0)

        # Wilson-Hilferty: (chi2 / dof) ** (1/3) is close to normal, whatever dof.
        spread = 2.0 / (9.0 * dof)
        short = (np.cbrt(distance / dof) - (1.0 - spread)) / np.sqrt(spread)
        steps = ent[:, _STEPS]
        cal_mean, cal_var = ent[:, _CAL_MEAN], ent[:, _CAL_VAR]
        tail = _gaussian_tail((short - cal_mean) / (np.sqrt(cal_var) + 1e-3))
        score = np.log(tail + 1e-10) / np.log(1e-10)
        live = (steps >= self.warmup) & active.any(axis=1)
        score = np.where(live, np.clip(np.nan_to_num(score, nan=0.0), 0.0, 1.0), 0.0)
        share = np.where(distance[:, None] > _TINY, terms / distance[:, None], 0.0)
        contribution = share * score[:, None]

        # Learn, down-weighting a step far from the model (it may be the fault itself).
        per_metric = distance / dof
        learning = steps >= self.warmup
        weight = np.where(
            learning, np.minimum(1.0, self.robust / np.maximum(per_metric, _TINY)), 1.0
        )
        self._learn_metrics(series, v, seen, weight)
        gamma = np.where(active.any(axis=1), self.cov_alpha * weight, 0.0)
        series[..., _SMOOTH] = smooth
        # Fewer directions than metrics, so the residual has a dimension to be measured in.
        rank = np.minimum(k, dof - 1.0)
        lost = (
            self._learn_directions(series, ent, smooth, gamma, rank)
            if k
            else gamma * (smooth * smooth).sum(axis=1)
        )
        ent[:, _RESIDUAL] = (1.0 - gamma) * ent[:, _RESIDUAL] + lost / np.maximum(dof - rank, 1.0)
        # The calibration: a running average over the second half of warm-up, then
        # exponential forgetting; a far step teaches it less, like the model.
        settled = steps - self.warmup // 2
        rate = np.where(
            steps < self.warmup,
            np.where(settled >= 0, 1.0 / (settled + 1.0), 0.0),
            self.calibration_alpha * weight,
        )
        delta = short - cal_mean
        ent[:, _CAL_MEAN] = cal_mean + rate * delta
        ent[:, _CAL_VAR] = (1.0 - rate) * (cal_var + rate * delta * delta)
        ent[:, _STEPS] = steps + 1.0
        return score, contribution

    def _soften(self, z: FloatArray) -> FloatArray:
        """``z`` as it is up to ``soft_z`` in size, logarithmic past it."""
        size = np.abs(z)
        past = np.maximum(size - self.soft_z, 0.0)
        softened: FloatArray = np.sign(z) * (np.minimum(size, self.soft_z) + np.log1p(past))
        return softened

    def _learn_metrics(
        self, series: FloatArray, v: FloatArray, seen: npt.NDArray[np.bool_], weight: FloatArray
    ) -> None:
        """Each metric's running mean and variance, its resolution (the smallest change
        between its values, past float rounding), its last value and its count of values."""
        count, mean, var = series[..., _COUNT], series[..., _MEAN], series[..., _VAR]
        last, resolution = series[..., _LAST], series[..., _RESOLUTION]
        change = np.abs(v - last)
        moved = seen & (count > 0) & (change > _ROUNDING * np.maximum(np.abs(v), np.abs(last)))
        series[..., _RESOLUTION] = np.where(
            moved, np.where(resolution > 0, np.minimum(resolution, change), change), resolution
        )
        series[..., _LAST] = np.where(seen, v, last)
        # A running average over the first values, then exponential forgetting.
        alpha = np.maximum(self.mean_alpha * weight[:, None], 1.0 / (count + 1.0))
        delta = v - mean
        new_mean = np.where(count == 0, v, mean + alpha * delta)
        new_var = np.where(count == 0, 0.0, (1.0 - alpha) * (var + alpha * delta * delta))
        series[..., _MEAN] = np.where(seen, new_mean, mean)
        series[..., _VAR] = np.where(seen, new_var, var)
        series[..., _COUNT] = count + seen

    def _learn_directions(
        self,
        series: FloatArray,
        ent: FloatArray,
        z: FloatArray,
        gamma: FloatArray,
        rank: FloatArray,
    ) -> FloatArray:
        """Incremental PCA: the top ``rank`` directions (at most ``k``) of
        ``(1 - g) U L U' + g z z'``; returns the energy of the directions dropped, which joins
        the residual."""
        loadings, eigen = series[..., _LOADINGS:], ent[:, _EIGEN:]
        basis = np.concatenate(
            [
                loadings * np.sqrt((1.0 - gamma)[:, None] * eigen)[:, None, :],
                (np.sqrt(gamma)[:, None] * z)[..., None],
            ],
            axis=2,
        )  # (entities, metrics, k + 1)
        gram = np.einsum("emi,emj->eij", basis, basis)
        values, vectors = np.linalg.eigh(gram)  # ascending
        values = np.maximum(values, 0.0)
        top = values[:, :0:-1]
        kept = np.arange(top.shape[1]) < rank[:, None]
        directions = np.einsum("emi,eij->emj", basis, vectors[:, :, :0:-1])
        norms = np.sqrt(top)[:, None, :]
        series[..., _LOADINGS:] = np.where(
            (norms > 1e-9) & kept[:, None, :], directions / np.maximum(norms, 1e-9), 0.0
        )
        ent[:, _EIGEN:] = np.where(kept, top, 0.0)
        lost: FloatArray = values[:, 0] + np.where(kept, 0.0, top).sum(axis=1)
        return lost
