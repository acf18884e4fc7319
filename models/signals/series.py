"""Series names as they travel in a MetricBatch: ``__name__`` with its labels folded in.

The remote_write receiver folds every label that is not an entity label into the name,
Prometheus-style and keys sorted (``http_requests_total{code="500",method="get"}``), so one
string names one series from request to request; the worker parses it back to apply the
signal rules. Both directions live here so that they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping

NAME = "__name__"
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_UNESCAPE = re.compile(r"\\(.)")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def series_name(labels: Mapping[str, str], exclude: Container[str] = ()) -> str:
    """``__name__`` with the other labels folded in, keys sorted; ``exclude`` and labels
    whose name starts with ``__`` are left out.

    >>> series_name({"__name__": "up", "job": "api", "code": "500"}, exclude={"job"})
    'up{code="500"}'
    """
    extra = [
        f'{key}="{_escape(value)}"'
        for key, value in sorted(labels.items())
        if not key.startswith("__") and key not in exclude
    ]
    name = labels[NAME]
    return f"{name}{{{','.join(extra)}}}" if extra else name


def parse_series(text: str) -> dict[str, str]:
    """The labels of a folded series name, ``__name__`` included.

    A name that does not parse as ``name{key="value",...}`` is a plain metric name (a
    producer may use any characters), so this never fails.

    >>> parse_series('http_requests_total{code="500",path="/a\\\\"b"}')
    {'__name__': 'http_requests_total', 'code': '500', 'path': '/a"b'}
    >>> parse_series("cpu percent")
    {'__name__': 'cpu percent'}
    """
    brace = text.find("{")
    if brace <= 0 or not text.endswith("}"):
        return {NAME: text}
    labels = {NAME: text[:brace]}
    pos = brace + 1
    if text[pos:] == "}":
        return labels
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            return {NAME: text}
        labels[match.group(1)] = _unescape(match.group(2))
        pos = match.end()
        if match.group(3) == "}":
            return labels if pos == len(text) else {NAME: text}
    return {NAME: text}
