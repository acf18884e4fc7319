"""The README's reference of a record: one row per field with its Avro type and doc.

Generated from the ``.avsc`` files, and a test holds the README to it, so the published
contract cannot drift from the schemas the code writes.

Examples
--------
>>> print(field_table("label").splitlines()[2])
| `entity` | string | The entity the label is about; the Kafka key. |
"""

from __future__ import annotations

from typing import Any

from schemas.codec import current_schema


def avro_type(node: Any) -> str:
    """An Avro type as a short phrase: ``array<double>``, ``null | string``, ``enum Kind``."""
    if isinstance(node, list):
        return " \\| ".join(avro_type(branch) for branch in node)
    if isinstance(node, str):
        return node.rsplit(".", 1)[-1]
    kind = node["type"]
    if isinstance(kind, (dict, list)):
        return avro_type(kind)
    if node.get("logicalType"):
        return str(node["logicalType"])
    if kind == "array":
        return f"array<{avro_type(node['items'])}>"
    if kind == "map":
        return f"map<{avro_type(node['values'])}>"
    if kind == "enum":
        return f"enum {node['name']} ({', '.join(node['symbols'])})"
    if kind == "record":
        return f"record {node['name']}"
    return str(kind)


def field_table(name: str) -> str:
    """The Markdown table of schema ``name``'s fields, as the README shows it."""
    rows = ["| field | type | what it holds |", "| --- | --- | --- |"]
    for field in current_schema(name).raw["fields"]:
        rows.append(f"| `{field['name']}` | {avro_type(field['type'])} | {field.get('doc', '')} |")
    return "\n".join(rows)
