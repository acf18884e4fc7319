"""The codec the settings ask for: Foresight framing, or Confluent's with a schema registry.

Every process builds its codec here, so ``SCHEMA_REGISTRY_URL`` switches them all at once.
"""

from __future__ import annotations

from connectors.schema_registry import ConfluentRegistry
from schemas.codec import Codec
from streams.settings import Settings


def codec_for(settings: Settings) -> Codec:
    """A codec with the Confluent registry at ``SCHEMA_REGISTRY_URL``, or without one.

    With a registry, every schema is registered here (raising
    :class:`~connectors.schema_registry.RegistryError` if one is refused or none answers).
    """
    url = settings.schema_registry_url
    if not url:
        return Codec()
    codec = Codec(ConfluentRegistry(url))
    codec.register_all()
    return codec
