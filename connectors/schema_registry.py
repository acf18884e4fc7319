"""A Confluent-compatible schema registry client for the codec's Confluent framing.

Subjects follow the record-name strategy (``io.foresight.MetricBatch``), so one schema serves
every topic that carries its record. A subject Foresight registers first gets the BACKWARD
compatibility level, so the registry itself refuses a version that cannot read what the one
before it wrote (a level someone set on the subject is left alone). Ids are cached: the
registry is asked once per schema.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from schemas.codec import SCHEMA_NAMES, Schema

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY = "BACKWARD"
_NO_SUBJECT_LEVEL = 40408  # Confluent's error code: the subject follows the global level


class RegistryError(LookupError):
    """The registry refused a request, or none answered; the message says which and why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


class ConfluentRegistry:
    """Registers Foresight's schemas and resolves ids, over the registry's REST API."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[str, int] = {}
        self._by_full_name = {full: short for short, full in SCHEMA_NAMES.items()}

    def _call(self, path: str, body: dict[str, Any] | None = None, method: str = "") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method or ("POST" if body is not None else "GET"),
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:2000].decode(errors="replace")
            try:
                reply = json.loads(detail)
                code, detail = int(reply["error_code"]), str(reply["message"])
            except (ValueError, KeyError, TypeError):
                code = error.code
            raise RegistryError(
                f"schema registry {self.url}{path}: HTTP {error.code}: {detail}", code
            ) from error
        except OSError as error:  # refused, unreachable, timed out
            raise RegistryError(
                f"no schema registry answers at {self.url} ({error}): start the local one with "
                "`foresight stack up`, or empty SCHEMA_REGISTRY_URL for Foresight's framing"
            ) from error

    def _subject(self, schema: Schema) -> str:
        return urllib.parse.quote(schema.full_name, safe="")

    def _ensure_level(self, subject: str) -> None:
        try:
            self._call(f"/config/{subject}")
        except RegistryError as error:
            if error.code != _NO_SUBJECT_LEVEL:
                raise
            self._call(f"/config/{subject}", {"compatibility": COMPATIBILITY}, method="PUT")

    def id_for(self, schema: Schema) -> int:
        """The registry id of ``schema``, registering it under its record name if new."""
        if schema.full_name not in self._ids:
            subject = self._subject(schema)
            self._ensure_level(subject)
            try:
                reply = self._call(f"/subjects/{subject}/versions", {"schema": schema.canonical()})
            except RegistryError as error:
                if error.code != 409:
                    raise
                raise RegistryError(
                    f"the schema registry at {self.url} refused {schema.name} version "
                    f"{schema.version} as the next version of {schema.full_name}: {error}. "
                    f"Its versions are at {self.url}/subjects/{subject}/versions",
                    409,
                ) from None
            self._ids[schema.full_name] = int(reply["id"])
        return self._ids[schema.full_name]

    def schema_for(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        """The Foresight schema name and raw schema registered under ``schema_id``."""
        raw = json.loads(self._call(f"/schemas/ids/{schema_id}")["schema"])
        full_name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
        if full_name not in self._by_full_name:
            raise RegistryError(f"schema id {schema_id} is {full_name}, not a Foresight record")
        return self._by_full_name[full_name], raw
