"""The Prometheus configuration the demo and the tests hand to a real Prometheus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.local.host_telemetry import remote_write


def test_remote_write_paths_are_absolute_from_a_relative_stack_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default stack folder is ``.stack``, relative; Prometheus would read a relative
    credentials file from its own configuration's folder and never find the key."""
    monkeypatch.chdir(tmp_path)
    config = remote_write(
        "http://127.0.0.1:9201/api/v1/write", Path(".stack/key"), ca_file=".stack/ca.pem"
    )
    credentials = config["authorization"]["credentials_file"]
    assert os.path.isabs(credentials) and credentials == str(tmp_path / ".stack" / "key")
    assert config["tls_config"]["ca_file"] == str(tmp_path / ".stack" / "ca.pem")
