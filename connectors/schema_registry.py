"""A Confluent-compatible schema registry client for the codec's Confluent framing.

Subjects follow the record-name strategy (``io.foresight.MetricBatch``), so one schema serves
every topic that carries its record. Ids are cached: the registry is asked once per schema.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from schemas.codec import SCHEMA_NAMES, Schema

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class ConfluentRegistry:
    """Registers Foresight's schemas and resolves ids, over the registry's REST API."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[str, int] = {}
        self._by_full_name = {full: short for short, full in SCHEMA_NAMES.items()}

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST" if body is not None else "GET",
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            raise KeyError(
                f"schema registry {self.url}{path}: HTTP {error.code} {detail}"
            ) from error

    def id_for(self, schema: Schema) -> int:
        """The registry id of ``schema``, registering it under its record name if new."""
        if schema.full_name not in self._ids:
            reply = self._call(
                f"/subjects/{schema.full_name}/versions", {"schema": schema.canonical()}
            )
            self._ids[schema.full_name] = int(reply["id"])
        return self._ids[schema.full_name]

    def schema_for(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        """The Foresight schema name and raw schema registered under ``schema_id``."""
        raw = json.loads(self._call(f"/schemas/ids/{schema_id}")["schema"])
        full_name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
        if full_name not in self._by_full_name:
            raise KeyError(f"schema id {schema_id} is {full_name}, not a Foresight record")
        return self._by_full_name[full_name], raw
