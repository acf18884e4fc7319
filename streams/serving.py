"""Which trained models serve: the production failure-risk model, and the newest candidate
scored in shadow beside it.

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


@dataclass(frozen=True)
class ServingModel:
    """A loaded model version, and whether it runs in shadow (recorded, never alerting)."""

    loaded: LoadedModel
    shadow: bool

    @property
    def version(self) -> str:
        return self.loaded.version.version

    def batch_model(self) -> BatchModel:
        """The model as :func:`models.entity.step_many` scores it."""
        model = self.loaded.model
        return BatchModel(
            FAILURE_RISK,
            self.version,
            int(model.horizon_s),
            lambda vectors: model.explain(vectors, TOP),
            self.shadow,
        )


def serving_models(settings: Settings) -> list[ServingModel]:
    """The production failure-risk model (if any), then the newest candidate newer than it
    when ``FORESIGHT_SHADOW_CANDIDATES`` is on.

    Raises :class:`~models.registry.RegistryError` (or ``OSError``, ``ValueError``) when the
    registry cannot be read or a version fails its integrity check.
    """
    registry = ModelRegistry(settings.model_registry_url)
    champion = registry.load_production(FAILURE_RISK)
    loaded = [] if champion is None else [ServingModel(champion, shadow=False)]
    served = int(champion.version.version) if champion else 0
    if settings.shadow_candidates and FAILURE_RISK in registry.models():
        newer = [v for v in registry.versions(FAILURE_RISK)
                 if v.stage == "candidate" and int(v.version) > served]  # fmt: skip
        if newer:
            loaded.append(ServingModel(registry.load(FAILURE_RISK, newer[-1].version), True))
    return loaded
