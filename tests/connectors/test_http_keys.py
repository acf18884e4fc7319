"""API keys: hashed in the keys file with roles, the first key, what clients present."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest

from connectors.http.keys import (
    DOCUMENTED_KEYS,
    OPERATE,
    READ,
    WRITE,
    KeysError,
    KeysFile,
    client_key,
    presented_key,
)

ROOT = Path(__file__).resolve().parents[2]


def test_keys_are_stored_hashed_with_their_roles(tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    agents, agents_key = keys.create("agents", [WRITE])
    ops, ops_key = keys.create("ops", [READ, OPERATE])
    text = keys.path.read_text()
    assert agents_key not in text and ops_key not in text
    assert agents.sha256 in text
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    assert keys.find(agents_key) == agents
    assert keys.find(ops_key) == ops and ops.roles == {READ, OPERATE}
    assert keys.find(agents_key + "x") is None
    assert keys.find("") is None and keys.find(None) is None
    assert [e.as_dict()["name"] for e in keys.entries()] == ["agents", "ops"]
    assert len(agents_key) >= 40 and agents_key != ops_key


def test_a_revoked_key_is_refused_by_a_server_already_reading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    serving = KeysFile(path)
    entry, key = KeysFile(path).create("agents", [WRITE])
    assert serving.find(key) == entry
    KeysFile(path).revoke(entry.id)
    assert serving.find(key) is None
    with pytest.raises(KeysError, match="no key 'nope'"):
        serving.revoke("nope")


def test_roles_and_names_are_checked(tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    with pytest.raises(KeysError, match="unknown admin"):
        keys.create("x", ["admin"])
    with pytest.raises(KeysError, match="name"):
        keys.create(" ", [READ])
    for name in ("ci\nadmin", "ci\tbot", "ci\x1b[31m"):  # one line in `keys list` and the audit
        with pytest.raises(KeysError, match="printable"):
            keys.create(name, [READ])
    assert keys.create("Grafana (prod) é", [READ])[0].name == "Grafana (prod) é"
    _, key = keys.create("x", [READ])
    with pytest.raises(KeysError, match="already"):
        keys.create("y", [READ], key)


def test_the_first_key_is_made_once_with_every_role(tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "stack" / "keys.json")
    credentials = tmp_path / "stack" / "credentials"
    key = keys.create_first(credentials)
    assert key is not None
    (entry,) = keys.entries()
    assert entry.roles == {READ, WRITE, OPERATE} and keys.find(key) == entry
    assert credentials.read_text().strip() == key
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert keys.create_first(credentials) is None  # a second start makes nothing
    assert len(keys.entries()) == 1


def test_a_malformed_keys_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(KeysError, match=str(path)):
        KeysFile(path).entries()


def test_what_a_request_presents() -> None:
    basic = base64.b64encode(b"prometheus:s3cret").decode()
    assert presented_key({"authorization": "Bearer s3cret"}) == "s3cret"
    assert presented_key({"authorization": f"Basic {basic}"}) == "s3cret"
    assert presented_key({"authorization": "Basic !!!"}) is None
    assert presented_key({"x-api-key": "s3cret"}) == "s3cret"
    assert presented_key({}, "entity=a&api_key=s3cret") == "s3cret"
    assert presented_key({}) is None


def test_clients_take_the_environment_then_the_credentials_file(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    assert client_key(credentials, {}) is None
    credentials.write_text("from-file\n")
    assert client_key(credentials, {}) == "from-file"
    assert client_key(credentials, {"FORESIGHT_API_KEY": "from-env"}) == "from-env"


_KEY_IN_EXAMPLE = re.compile(
    r"(?:Bearer |Basic |X-API-Key: |api_key=|FORESIGHT_API_KEY=|credentials: |password: )"
    r"([^\s\"'&`)<>},]+)"
)


def test_every_key_in_the_documentation_is_a_documented_key() -> None:
    """A server beyond the loopback refuses the keys of DOCUMENTED_KEYS: every key string an
    example shows must be one of them."""
    documents = [ROOT / "README.md", *ROOT.glob("connectors/**/README.md"), *ROOT.glob("docs/*")]
    shown = {
        found
        for document in documents
        for found in _KEY_IN_EXAMPLE.findall(document.read_text())
        if not found.startswith("$")  # a shell variable, not a key
    }
    assert shown, "no example key found: has the README's key syntax changed?"
    assert shown <= DOCUMENTED_KEYS, f"add to DOCUMENTED_KEYS: {sorted(shown - DOCUMENTED_KEYS)}"
