"""Relabelling with Prometheus' semantics: anchoring, defaults, templates, each action."""

from __future__ import annotations

from typing import Any

import pytest

from models.signals.relabel import RelabelConfig, RelabelError, relabel

SERIES = {"__name__": "node_filesystem_avail_bytes", "device": "/dev/sda1", "mountpoint": "/"}


def _apply(*configs: dict[str, Any]) -> dict[str, str] | None:
    return relabel(dict(SERIES), tuple(RelabelConfig.from_dict(c) for c in configs))


def test_keep_and_drop_regexes_are_fully_anchored() -> None:
    by_name = {"source_labels": ["__name__"]}
    assert _apply({**by_name, "regex": "node_filesystem", "action": "keep"}) is None
    assert _apply({**by_name, "regex": "node_filesystem.*", "action": "keep"}) == SERIES
    assert _apply({**by_name, "regex": "avail", "action": "drop"}) == SERIES
    assert _apply({**by_name, "regex": ".*avail.*", "action": "drop"}) is None


def test_source_labels_join_with_the_separator() -> None:
    joined = {"source_labels": ["device", "mountpoint"], "action": "keep"}
    assert _apply({**joined, "regex": "/dev/sda1;/"}) == SERIES
    assert _apply({**joined, "separator": "@", "regex": "/dev/sda1@/"}) == SERIES


def test_replace_defaults_and_templates() -> None:
    # Default regex (.*) and replacement $1: copy a label.
    assert _apply({"source_labels": ["mountpoint"], "target_label": "mount"}) == {
        **SERIES,
        "mount": "/",
    }
    named = {
        "source_labels": ["device"],
        "regex": "/dev/(?P<disk>[a-z]+)([0-9]+)",
        "target_label": "disk",
    }
    assert _apply({**named, "replacement": "${disk}-p$2"})["disk"] == "sda-p1"  # type: ignore[index]
    # As in Go, $1x names a group "1x", which does not exist: empty, so the label goes.
    assert "disk" not in _apply({**named, "replacement": "$1x"})  # type: ignore[operator]
    assert _apply({**named, "replacement": "$$1"})["disk"] == "$1"  # type: ignore[index]
    # The target may be a template too; no match changes nothing.
    assert _apply({**named, "target_label": "${disk}", "replacement": "yes"})["sda"] == "yes"  # type: ignore[index]
    assert _apply({**named, "regex": "/dev/nvme.*"}) == SERIES


def test_replace_with_an_empty_result_removes_the_label_and_a_lost_name_drops() -> None:
    gone = _apply({"source_labels": ["nothing"], "target_label": "device"})
    assert gone == {k: v for k, v in SERIES.items() if k != "device"}
    assert _apply({"source_labels": ["nothing"], "target_label": "__name__"}) is None


def test_labelmap_labeldrop_labelkeep() -> None:
    mapped = _apply({"action": "labelmap", "regex": "(mount)point", "replacement": "${1}"})
    assert mapped == {**SERIES, "mount": "/"}
    assert _apply({"action": "labeldrop", "regex": "dev.*"}) == {
        "__name__": SERIES["__name__"],
        "mountpoint": "/",
    }
    assert _apply({"action": "labelkeep", "regex": "__name__|device"}) == {
        "__name__": SERIES["__name__"],
        "device": "/dev/sda1",
    }


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"action": "hashmod", "modulus": 2}, "unknown field"),
        ({"action": "hashmod"}, "action 'hashmod' is not supported"),
        ({"source_labels": ["a"]}, "replace needs a target_label"),
        ({"action": "keep"}, "keep needs source_labels"),
        ({"source_labels": "a", "action": "keep"}, "source_labels must be a list"),
        ({"source_labels": ["a"], "regex": "(", "action": "drop"}, "does not compile"),
    ],
)
def test_configs_prometheus_would_refuse_are_refused(config: dict[str, Any], words: str) -> None:
    with pytest.raises(RelabelError, match=words):
        RelabelConfig.from_dict(config)
