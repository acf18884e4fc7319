"""A rules file of one's own, layered over shipped rules: read and checked in one way.

Signal profiles (``FORESIGHT_SIGNAL_RULES``) and PII rules (``FORESIGHT_PII_RULES``) are both
YAML mappings of one's own list, which comes first, and ``shipped:``, which shipped rules
follow it (all of them when absent, none with ``[]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from schemas.yaml_text import parse_yaml


def read_rules_file(
    path: str | Path, kind: str, items: str, shipped: Sequence[str], error: type[ValueError]
) -> tuple[list[Any], list[str]]:
    """The raw entries under ``items`` in the YAML file of ``kind`` rules (``signal``,
    ``PII``) at ``path``, and the names of the shipped rules it keeps; raises ``error`` saying
    what is wrong with the file."""
    try:
        raw = parse_yaml(Path(path).read_text(), str(path))
    except OSError as problem:
        raise error(f"cannot read the {kind} rules file {path}: {problem}") from None
    except ValueError as problem:
        raise error(str(problem)) from None
    if not isinstance(raw, Mapping) or set(raw) - {items, "shipped"}:
        raise error(
            f"{path}: a rules file is a mapping with '{items}' (a list) and optionally "
            f"'shipped' (the shipped ones to keep after them, from {list(shipped)})"
        )
    mine = raw.get(items) or []
    if not isinstance(mine, list):
        raise error(f"{path}: {items} must be a list")
    kept = raw.get("shipped", list(shipped))
    if not isinstance(kept, list) or set(kept) - set(shipped):
        raise error(f"{path}: shipped must be a list drawn from {list(shipped)}")
    return mine, kept
