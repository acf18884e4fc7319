"""Which trained models serve: the production failure-risk model, the candidates of an A/B
split on their shares of the entities, and the newest candidate scored in shadow beside them.

The worker and the intelligence API load them alike, from the registry
(``MODEL_REGISTRY_URL``): the registry, not a ModelUpdate record, says which version serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.entity import BatchModel
from models.explain import TOP
from models.registry import LoadedModel, ModelRegistry
from models.training import FAILURE_RISK
from streams.settings import Settings

EVERY_ENTITY = (0.0, 1.0)


@dataclass(frozen=True)
class ServingModel:
    """A loaded model version, whether it runs in shadow (recorded, never alerting), and
    the interval of entity slots it serves (:mod:`models.traffic`)."""

    loaded: LoadedModel
    shadow: bool
    arm: tuple[float, float] = EVERY_ENTITY

    @property
    def version(self) -> str:
        return self.loaded.version.version

    def batch_model(self, explain_from: float = 0.0) -> BatchModel:
        """The model as :func:`models.entity.step_many` scores it: its predictions at or above
        ``explain_from`` carry their SHAP drivers."""
        model = self.loaded.model
        return BatchModel(
            FAILURE_RISK,
            self.version,
            int(model.horizon_s),
            lambda vectors: model.explain(vectors, TOP, explain_from),
            self.shadow,
            self.arm,
        )


def serving_models(settings: Settings) -> list[ServingModel]:
    """The production failure-risk model (if any) on the entities no A/B arm takes, each
    candidate of the split (``foresight models split``) on its share, then the newest
    candidate newer than production and outside the split, in shadow on every entity, when
    ``FORESIGHT_SHADOW_CANDIDATES`` is on.

    Raises :class:`~models.registry.RegistryError` (or ``OSError``, ``ValueError``) when the
    registry cannot be read or a version fails its integrity check.
    """
    registry = ModelRegistry(settings.model_registry_url)
    if FAILURE_RISK not in registry.models():
        return []
    versions = registry.versions(FAILURE_RISK)
    champion = registry.load_production(FAILURE_RISK)
    served = int(champion.version.version) if champion else 0
    candidates = {v.version for v in versions if v.stage == "candidate"}
    split = registry.split(FAILURE_RISK)
    arms = split.arms(champion.version.version if champion else None)
    loaded = [] if champion is None else [ServingModel(champion, False, arms[str(served)])]
    for version in sorted(set(split.shares) & candidates, key=int):
        loaded.append(ServingModel(registry.load(FAILURE_RISK, version), False, arms[version]))
    if settings.shadow_candidates:
        newer = [v for v in sorted(candidates - set(split.shares), key=int) if int(v) > served]
        if newer:
            loaded.append(ServingModel(registry.load(FAILURE_RISK, newer[-1]), True))
    return loaded
