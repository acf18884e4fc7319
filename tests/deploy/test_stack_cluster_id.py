"""The local stack's KRaft cluster id: one Kafka's storage tool accepts."""

from __future__ import annotations

import uuid

import pytest

from deploy.local import stack


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool takes ``-t -01m...`` for an option and refuses to format."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert stack._random_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
