"""Prometheus relabelling (``metric_relabel_configs``), applied to one series' labels.

Each config reads like Prometheus' own::

    - source_labels: [__name__, mode]   # values joined with `separator` (default ";")
      regex: node_cpu_seconds_total;idle # fully anchored, as Prometheus anchors it
      action: keep                       # replace (default), keep, drop, labelmap,
                                         # labeldrop, labelkeep
      target_label: ...                  # replace: the label to set
      replacement: $1                    # replace and labelmap: Go template ($1, ${1}, $name)

A ``replace`` whose result is empty removes the target label; a series that loses its
``__name__`` is dropped. Hashing (``hashmod``) and the case actions are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.signals.series import NAME

ACTIONS = ("replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep")
_TEMPLATE = re.compile(r"\$(?:\$|\{([^}]*)\}|([a-zA-Z0-9_]+))")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FIELDS = {"source_labels", "separator", "regex", "target_label", "replacement", "action"}


class RelabelError(ValueError):
    """A relabel config that Prometheus would refuse too; the message says which field."""


def expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``.

    As in Go, ``$name`` takes the longest run of letters, digits and underscores, so ``$1x``
    is the (missing, hence empty) group ``1x``; write ``${1}x``.

    >>> m = re.fullmatch(r"(?P<dev>[a-z]+)(\\d)", "sda1")
    >>> expand("${dev}-$2 $1x $$", m)
    'sda-1  $'
    """

    def group(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name = found.group(1) if found.group(1) is not None else found.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group
            return ""
        return value or ""

    return _TEMPLATE.sub(group, template)


@dataclass(frozen=True)
class RelabelConfig:
    """One relabel step; build it from YAML with :meth:`from_dict`."""

    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    regex: re.Pattern[str] = re.compile("(.*)")
    target_label: str = ""
    replacement: str = "$1"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RelabelConfig:
        """A config from its YAML mapping; raises :class:`RelabelError` naming the field."""
        unknown = set(raw) - _FIELDS
        if unknown:
            raise RelabelError(
                f"unknown field(s) {sorted(unknown)}; a relabel config has {sorted(_FIELDS)}"
            )
        action = str(raw.get("action", "replace"))
        if action not in ACTIONS:
            raise RelabelError(f"action {action!r} is not supported; use one of {ACTIONS}")
        sources = raw.get("source_labels", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise RelabelError(f"source_labels must be a list of label names, got {sources!r}")
        try:
            regex = re.compile(str(raw.get("regex", "(.*)")))
        except re.error as error:
            raise RelabelError(f"regex {raw.get('regex')!r} does not compile: {error}") from None
        config = cls(
            action=action,
            source_labels=tuple(sources),
            separator=str(raw.get("separator", ";")),
            regex=regex,
            target_label=str(raw.get("target_label", "")),
            replacement=str(raw.get("replacement", "$1")),
        )
        if action == "replace" and not config.target_label:
            raise RelabelError("action replace needs a target_label")
        if action in ("keep", "drop") and not config.source_labels:
            raise RelabelError(f"action {action} needs source_labels")
        return config

    def apply(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The labels after this step (a new dict when changed), or None when dropped."""
        action = self.action
        if action in ("keep", "drop", "replace"):
            value = self.separator.join(labels.get(s, "") for s in self.source_labels)
            match = self.regex.fullmatch(value)
            if action == "keep":
                return labels if match else None
            if action == "drop":
                return None if match else labels
            if match is None:
                return labels
            target = expand(self.target_label, match)
            result = expand(self.replacement, match)
            if not _LABEL_NAME.fullmatch(target):
                return labels  # Prometheus skips an invalid target name
            changed = dict(labels)
            if result:
                changed[target] = result
            else:
                changed.pop(target, None)
            return changed
        if action == "labelmap":
            changed = dict(labels)
            for name, value in labels.items():
                match = self.regex.fullmatch(name)
                if match:
                    changed[expand(self.replacement, match)] = value
            return changed
        keep = action == "labelkeep"
        return {
            name: value
            for name, value in labels.items()
            if (self.regex.fullmatch(name) is not None) == keep
        }


def relabel(labels: dict[str, str], configs: tuple[RelabelConfig, ...]) -> dict[str, str] | None:
    """Apply ``configs`` in order; None when a step drops the series or its name is gone.

    >>> keep = RelabelConfig.from_dict(
    ...     {"source_labels": ["__name__"], "regex": "node_load.*", "action": "keep"})
    >>> relabel({"__name__": "node_load1"}, (keep,)), relabel({"__name__": "up"}, (keep,))
    ({'__name__': 'node_load1'}, None)
    """
    result = labels
    for config in configs:
        changed = config.apply(result)
        if changed is None:
            return None
        result = changed
    return result if result.get(NAME) else None
