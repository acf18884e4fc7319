"""Foresight's records as plain JSON, and the JSON Schema of that form, both from the Avro schema.

A record's JSON form follows its Avro schema field by field, for consumers that read neither
Avro nor a registry (the JSON twins, ``<topic>.json``): objects for records, arrays, strings
for enums, numbers for ints, longs and doubles, timestamps as epoch milliseconds as in Avro, a
union's value as itself (``null`` or the value, not Avro's ``{"type": value}`` wrapping), bytes
as base64. JSON has no NaN or infinity, so a double that is not finite (a missing interval
bound, a time to exhaustion that never comes) is ``null``.

:func:`json_schema` writes the JSON Schema (draft 2020-12) of that form from the same Avro
schema, docs included; ``schemas/json/<name>.schema.json`` holds it for every record that has a
twin (:data:`TWINNED`), and a test keeps those files equal to what this module writes.

Examples
--------
>>> to_json = json_form("routing_decision")
>>> form = to_json({"task_type": "build", "agent": "a1", "expected_duration_ms": float("inf"),
...     "success_probability": 0.9, "model": "agent_stats", "model_version": "1",
...     "event_time": 1700000000000})
>>> form["expected_duration_ms"], form["task_id"], form["alternatives"], form["event_time"]
(None, None, [], 1700000000000)
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from schemas.codec import current_schema

Convert = Callable[[Any], Any]

#: The records that have JSON twins, whose JSON Schemas ship in ``schemas/json``.
TWINNED: tuple[str, ...] = ("feature_vector", "prediction_batch", "alert", "routing_decision")
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_MISSING = object()


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_array(values: Any) -> list[float | None]:
    array = np.asarray(values, dtype=np.float64)
    out: list[float | None] = array.tolist()
    for i in np.flatnonzero(~np.isfinite(array)):
        out[i] = None
    return out


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        kind = node["type"]
        return kind if isinstance(kind, str) else _kind(kind)
    return str(node)


def _resolved(node: Any, named: dict[str, Any]) -> tuple[Any, str]:
    """The type ``node`` stands for (a named type's definition, a field type's inner type), and
    its kind; a named type met for the first time is remembered in ``named``."""
    while True:
        if isinstance(node, str) and node in named:
            node = named[node]
        elif isinstance(node, dict) and isinstance(node["type"], (dict, list)):
            node = node["type"]
        else:
            break
    if isinstance(node, dict) and "name" in node:
        named[node["name"]] = node
        named[f"{node.get('namespace', 'io.foresight')}.{node['name']}"] = node
    return node, _kind(node)


def _converter(node: Any, named: dict[str, Any]) -> Convert:
    """A function from a value of Avro type ``node`` to its JSON form."""
    node, kind = _resolved(node, named)
    if kind == "record":
        fields = [
            (f["name"], f.get("default", _MISSING), _converter(f["type"], named))
            for f in node["fields"]
        ]

        def record(value: Mapping[str, Any]) -> dict[str, Any]:
            out = {}
            for name, default, convert in fields:
                item = value[name] if default is _MISSING else value.get(name, default)
                out[name] = None if item is None else convert(item)
            return out

        return record
    if kind == "array":
        if _resolved(node["items"], named)[1] in ("double", "float"):
            return _finite_array
        convert = _converter(node["items"], named)
        return lambda values: [convert(v) for v in values]
    if kind == "map":
        convert = _converter(node["values"], named)
        return lambda values: {k: convert(v) for k, v in values.items()}
    if kind == "union":
        branches = [b for b in node if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"a union of {branches} has no single JSON form")
        return _converter(branches[0], named)
    scalars: dict[str, Convert] = {
        "double": _finite,
        "float": _finite,
        "int": int,
        "long": int,
        "bytes": _base64,
        "boolean": bool,
    }
    return scalars.get(kind, lambda value: value)


@cache
def json_form(name: str) -> Convert:
    """The function from a record of schema ``name`` to its JSON form (a dict)."""
    return _converter(current_schema(name).raw, {})


def _schema_of(node: Any, named: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the JSON form of Avro type ``node``."""
    node, kind = _resolved(node, named)
    if kind == "record":
        properties = {}
        for field in node["fields"]:
            schema = _schema_of(field["type"], named)
            if "doc" in field:
                schema = {**schema, "description": field["doc"]}
            properties[field["name"]] = schema
        return {
            "type": "object",
            "title": node["name"],
            **({"description": node["doc"]} if "doc" in node else {}),
            "properties": properties,
            "required": [f["name"] for f in node["fields"]],
            "additionalProperties": False,
        }
    if kind == "enum":
        return {"type": "string", "enum": list(node["symbols"])}
    if kind == "array":
        return {"type": "array", "items": _schema_of(node["items"], named)}
    if kind == "map":
        return {"type": "object", "additionalProperties": _schema_of(node["values"], named)}
    if kind == "union":
        return {"anyOf": [_schema_of(branch, named) for branch in node]}
    if isinstance(node, dict) and node.get("logicalType") == "timestamp-millis":
        return {"type": "integer", "$comment": "milliseconds since 1970-01-01T00:00:00Z"}
    scalars: dict[str, dict[str, Any]] = {
        "double": {"type": ["number", "null"], "$comment": "null where the value is not finite"},
        "float": {"type": ["number", "null"], "$comment": "null where the value is not finite"},
        "int": {"type": "integer"},
        "long": {"type": "integer"},
        "string": {"type": "string"},
        "boolean": {"type": "boolean"},
        "null": {"type": "null"},
        "bytes": {"type": "string", "contentEncoding": "base64"},
    }
    return scalars[kind]


def dumps(form: Any) -> bytes:
    """A JSON form as compact UTF-8 JSON, the bytes of a twin record."""
    return json.dumps(form, separators=(",", ":"), ensure_ascii=False).encode()


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the JSON form of schema ``name``'s records, from its Avro schema."""
    schema = current_schema(name)
    return {
        "$schema": _DRAFT,
        "$id": f"https://foresight.io/schemas/{schema.full_name}.v{schema.version}.json",
        **_schema_of(schema.raw, {}),
    }


def json_schema_text(name: str) -> str:
    """:func:`json_schema` as the text of its file in ``schemas/json``."""
    return json.dumps(json_schema(name), indent=2) + "\n"


def shipped_json_schema(name: str) -> str:
    """The text of ``schemas/json/<name>.schema.json``, as shipped."""
    return resources.files("schemas").joinpath(f"json/{name}.schema.json").read_text()


def write_json_schemas(folder: Path = Path(__file__).parent / "json") -> list[Path]:
    """Write the JSON Schema of every twinned record into ``folder``; returns the files."""
    folder.mkdir(exist_ok=True)
    written = []
    for name in TWINNED:
        path = folder / f"{name}.schema.json"
        path.write_text(json_schema_text(name))
        written.append(path)
    return written
