"""YAML a person wrote (settings, signal and PII rules): parsed, or one line saying where it
breaks.

PyYAML's own message spans four lines and names ``"<unicode string>"`` rather than the file;
an operator reading a refused start wants the file, the line and the column.

>>> parse_yaml("step_s: 5\\n", "foresight.yaml")
{'step_s': 5}
>>> parse_yaml("step_s: [\\n", "foresight.yaml")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: foresight.yaml is not YAML at line 2, column 1: expected the node content, ...
"""

from __future__ import annotations

from typing import Any

import yaml


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed as YAML (PyYAML's safe loader); a ``ValueError`` naming ``source``, the
    line and column and the problem when it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{source} is not YAML{where}: {problem}") from None
