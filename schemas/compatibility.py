"""Backward compatibility of Avro schemas: can the new schema read what the old one wrote?

The rules are Avro's schema resolution, as a schema registry's BACKWARD mode applies them:
a field the reader adds needs a default; a field the reader drops is skipped; types must match
or be a legal promotion; an enum reader must know every writer symbol unless it has a default;
a union reader must accept each writer branch.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind: str = schema["type"]
        return kind if isinstance(kind, str) else _kind(kind)
    return str(schema)


def _problems(reader: Any, writer: Any, path: str) -> list[str]:
    rk, wk = _kind(reader), _kind(writer)
    if wk == "union":
        return [p for branch in writer for p in _problems(reader, branch, path)]
    if rk == "union":
        if any(not _problems(branch, writer, path) for branch in reader):
            return []
        return [f"{path}: no branch of the reader's union reads the writer's {wk}"]
    if rk != wk:
        if rk in _PROMOTIONS.get(wk, set()):
            return []
        return [f"{path}: type changed from {wk} to {rk}"]
    if rk == "record":
        out = []
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            old = written.get(field["name"])
            if old is None:
                if "default" not in field:
                    out.append(f"{path}.{field['name']}: new field without a default")
            else:
                out += _problems(field["type"], old["type"], f"{path}.{field['name']}")
        return out
    if rk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum lost symbols {sorted(missing)} and has no default"]
        return []
    if rk == "array":
        return _problems(reader["items"], writer["items"], f"{path}[]")
    if rk == "map":
        return _problems(reader["values"], writer["values"], f"{path}{{}}")
    if rk == "fixed" and reader["size"] != writer["size"]:
        return [f"{path}: fixed size changed"]
    return []


def backward_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why ``reader`` (new) cannot read data written with ``writer`` (old); empty if it can."""
    return _problems(reader, writer, reader.get("name", "record"))
