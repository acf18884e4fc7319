"""PII rules: each action, each shipped pattern, rules files, the secret, and the decoder hook."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.pii import (
    REDACTED,
    PiiRule,
    PiiRulesError,
    Scrubber,
    load_rules,
    load_secret,
    parse_rule,
    shipped_rules,
)
from connectors.remote_write import RemoteWriteDecoder
from tests.connectors.prometheus_proto import snappy, write_request

SECRET = b"unit-test-secret-0123456789abcdef"
TOKEN = re.compile(r"hash-[0-9a-f]{16}")


def _scrubber(*rules: dict[str, Any]) -> Scrubber:
    return Scrubber([parse_rule(r, "test") for r in rules], SECRET)


def _count(rule: str, action: str) -> float:
    value = REGISTRY.get_sample_value(
        "foresight_pii_scrubbed_total", {"rule": rule, "action": action}
    )
    return value or 0.0


# -- actions ---------------------------------------------------------------------------------


def test_drop_removes_a_label_selected_by_exact_key() -> None:
    scrubber = _scrubber({"name": "users", "key": "user", "action": "drop"})
    assert scrubber.labels({"__name__": "up", "user": "ada", "users": "2"}) == {
        "__name__": "up",
        "users": "2",
    }


def test_drop_by_value_drops_the_label_whose_value_matches() -> None:
    scrubber = _scrubber({"name": "phones", "value_regex": r"\+\d{9,}", "action": "drop"})
    assert scrubber.labels({"a": "call +441234567890", "b": "fine"}) == {"b": "fine"}


def test_hash_is_keyed_stable_truncated_and_the_same_under_any_key() -> None:
    scrubber = _scrubber({"name": "customers", "key_regex": "^customer", "action": "hash"})
    first = scrubber.labels({"customer": "acme", "customer_id": "acme", "other": "acme"})
    assert TOKEN.fullmatch(first["customer"])
    assert first == {
        "customer": first["customer"],
        "customer_id": first["customer"],
        "other": "acme",
    }
    assert scrubber.value("customer", "acme") == first["customer"]  # the next request too
    other_secret = Scrubber(scrubber.rules, b"another-secret-0123456789abcdef!")
    assert other_secret.value("customer", "acme") != first["customer"]
    assert scrubber.value("customer", "acme2") != first["customer"]


def test_hash_by_value_replaces_each_match_and_keeps_the_rest() -> None:
    scrubber = _scrubber({"name": "ids", "value_regex": r"u-\d+", "action": "hash"})
    scrubbed = scrubber.value("path", "/users/u-17/orders/u-17x/u-3")
    assert scrubbed is not None
    parts = scrubbed.split("/")
    assert parts[1] == "users" and parts[3] == "orders"
    assert parts[2] == scrubber.token("u-17") and parts[4] == scrubber.token("u-17") + "x"
    assert parts[5] == scrubber.token("u-3")


def test_redact_whole_value_or_each_match() -> None:
    by_key = _scrubber({"name": "notes", "key": "note", "action": "redact"})
    assert by_key.labels({"note": "anything", "x": "anything"}) == {
        "note": REDACTED,
        "x": "anything",
    }
    by_value = _scrubber({"name": "pins", "value_regex": r"\b\d{4}\b", "action": "redact"})
    assert by_value.value("msg", "pin 1234 or 5678, not 123") == (
        f"pin {REDACTED} or {REDACTED}, not 123"
    )


def test_key_and_value_together_must_both_match() -> None:
    scrubber = _scrubber(
        {"name": "sessions", "key": "session", "value_regex": "^s-", "action": "redact"}
    )
    assert scrubber.labels({"session": "s-1", "other": "s-1", "session2": "s-1"}) == {
        "session": f"{REDACTED}1",
        "other": "s-1",
        "session2": "s-1",
    }
    assert scrubber.labels({"session": "x-1"}) == {"session": "x-1"}
    assert scrubber.labels({"other": "s-1"}) == {"other": "s-1"}


def test_rules_run_in_order_and_a_drop_ends_the_run() -> None:
    scrubber = _scrubber(
        {"name": "first", "key": "k", "action": "redact"},
        {"name": "second", "value_regex": "redacted", "action": "drop"},
    )
    assert scrubber.labels({"k": "v"}) == {}
    before = _count("second", "drop")
    scrubber.labels({"k": "v"})  # cached, and counted again
    assert _count("second", "drop") == before + 1


def test_metric_names_are_never_scrubbed() -> None:
    scrubber = _scrubber({"name": "all", "value_regex": ".+", "action": "redact"})
    assert scrubber.labels({"__name__": "up", "job": "x"}) == {"__name__": "up", "job": REDACTED}
    with pytest.raises(PiiRulesError, match="never scrubbed"):
        parse_rule({"name": "names", "key": "__name__", "action": "drop"}, "test")


def test_agent_events_required_fields_are_redacted_optional_ones_nulled() -> None:
    scrubber = _scrubber(
        {"name": "agents", "key_regex": "^(agent|error_class|task_id|workflow_id)$",
         "action": "drop"},
        {"name": "parents", "key": "parent_task_id", "action": "redact"},
        {"name": "hosts", "key": "host", "action": "drop"},
    )  # fmt: skip
    labels = {"host": "h", "zone": "z"}
    event = {"agent": "a", "task_id": "t", "task_type": "y", "phase": "FAILED",
             "event_time": 1, "error_class": "oom", "labels": labels, "workflow_id": "w",
             "parent_task_id": "p", "step": 2}  # fmt: skip
    (scrubbed,) = scrubber.agent_events([event])
    assert scrubbed == {**event, "agent": REDACTED, "task_id": REDACTED, "error_class": None,
                        "labels": {"zone": "z"}, "workflow_id": None,
                        "parent_task_id": REDACTED}  # fmt: skip
    assert event["agent"] == "a"  # the caller's record is left as it was


def test_a_snapshot_keeps_a_repository_and_loses_what_the_rules_drop() -> None:
    scrubber = _scrubber({"name": "names", "key_regex": "^(repository|source)$", "action": "drop"})
    snapshot = {"repository": "acme/shop", "commit": "ab12", "source": "ci-7", "lines": 10}
    (scrubbed,) = scrubber.quality_snapshots([snapshot])
    assert scrubbed == {**snapshot, "repository": REDACTED, "source": ""}
    (tokened,) = Scrubber(shipped_rules(), SECRET).quality_snapshots(
        [{**snapshot, "repository": "https://x:ghp_" + "a" * 36 + "@github.com/acme/shop"}]
    )
    assert "ghp_" not in tokened["repository"] and tokened["commit"] == "ab12"


# -- the shipped rules -----------------------------------------------------------------------


SHIPPED = Scrubber(shipped_rules(), SECRET)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("ada.lovelace+ops@example.co.uk", "emails"),
        ("10.0.0.5", "ipv4"),
        ("255.255.255.255", "ipv4"),
        ("fe80::1", "ipv6"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("2001:db8::8a2e:370:7334", "ipv6"),
        ("::1", "ipv6"),
        ("::ffff:192.0.2.1", "ipv6"),
        ("Bearer abc.DEF-123_xyz", "bearer_tokens"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "jwts"),
        ("fsk_" + "A" * 43, "api_keys"),
        ("sk-" + "a1" * 12, "api_keys"),
        ("ghp_" + "x" * 36, "api_keys"),
        ("AKIAIOSFODNN7EXAMPLE", "api_keys"),
        ("xoxb-1234-5678-abcdefgh", "api_keys"),
        ("postgres://app:hunter2@db:5432/x", "url_credentials"),
    ],
)
def test_a_shipped_pattern_scrubs_its_kind(value: str, rule: str) -> None:
    action = next(r.action for r in SHIPPED.rules if r.name == rule)
    before = _count(rule, action)
    scrubbed = SHIPPED.value("text", f"seen {value} here")
    assert scrubbed is not None and value not in scrubbed
    assert scrubbed.startswith("seen ") and scrubbed.endswith(" here")
    assert (REDACTED in scrubbed) if action == "redact" else TOKEN.search(scrubbed)
    assert _count(rule, action) == before + 1


@pytest.mark.parametrize(
    "value",
    [
        "web-1:9100",
        "node_exporter",
        "1.2.3",
        "v1.2.3.4.5",
        "256.1.1.1",
        "12:30:45",
        "00:1a:2b:3c:4d:5e",
        "0.005",
        "std::vector",
        "user@localhost",
        "token bucket",
        "/var/lib/docker",
    ],
)
def test_ordinary_values_pass_the_shipped_rules(value: str) -> None:
    assert SHIPPED.value("text", value) == value


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        ("password", False),
        ("api_key", False),
        ("github_token", False),
        ("Authorization", False),
        ("db.credentials", False),
        ("max_tokens", True),
        ("prompt_tokens", True),
        ("secretary", True),
    ],
)
def test_labels_named_like_secrets_are_redacted(key: str, kept: bool) -> None:
    assert (SHIPPED.value(key, "value") == "value") is kept


def test_an_address_in_instance_keeps_entity_identity_through_the_decoder() -> None:
    """The README's relabel rule copies instance's host to entity: both hash to one token,
    and the same token from request to request."""
    decoder = RemoteWriteDecoder(["entity", "instance"], scrub=SHIPPED.labels)
    labels = {"__name__": "node_load1", "instance": "10.1.2.3:9100", "entity": "10.1.2.3",
              "owner": "ops@example.com"}  # fmt: skip
    batches = [
        decoder.decode(snappy(write_request([(labels, [(1000 * i, 1.0)])])), now_ms=10_000).batches[
            0
        ]
        for i in range(2)
    ]
    token = SHIPPED.token("10.1.2.3")
    assert [b["entity"] for b in batches] == [token, token]
    assert batches[0]["labels"] == {"entity": token, "instance": f"{token}:9100"}
    assert batches[0]["names"] == [f'node_load1{{owner="{SHIPPED.token("ops@example.com")}"}}']


# -- rules files and the secret --------------------------------------------------------------


def _rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pii.yaml"
    path.write_text(text)
    return path


def test_a_rules_file_runs_first_then_the_shipped_rules_it_keeps(tmp_path: Path) -> None:
    shipped = [r.name for r in shipped_rules()]
    assert [r.name for r in load_rules("")] == shipped
    extended = load_rules(
        _rules_file(tmp_path, "rules:\n  - {name: customers, key: customer, action: hash}\n")
    )
    assert [r.name for r in extended] == ["customers", *shipped]
    replaced = load_rules(
        _rules_file(tmp_path, "rules:\n  - {name: mine, key: k, action: drop}\nshipped: []\n")
    )
    assert [r.name for r in replaced] == ["mine"]
    subset = load_rules(
        _rules_file(
            tmp_path,
            "rules:\n  - {name: ipv4, value_regex: '^10[.]', action: redact}\nshipped: [emails]\n",
        )
    )
    assert [r.name for r in subset] == ["ipv4", "emails"]
    assert isinstance(subset[0], PiiRule) and subset[0].action == "redact"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("rules: [{name: x, key: k, action: burn}]", "action 'burn' must be one of"),
        ("rules: [{name: x, action: drop}]", "select values with key"),
        ("rules: [{name: x, key: k, key_regex: k, action: drop}]", "not both"),
        ("rules: [{name: x, value_regex: '(', action: drop}]", "not a regular expression"),
        ("rules: [{name: Bad Name, key: k, action: drop}]", "lower-case"),
        ("rules: [{name: x, key: k, action: drop, when: always}]", "unknown fields ['when']"),
        ("rules: [{name: ipv4, key: k, action: drop}]", "repeat"),
        ("rules: [{name: a, key: k, action: drop}, {name: a, key: j, action: drop}]", "repeat"),
        ("shipped: [emails, phones]", "shipped must be a list drawn from"),
        ("rules: {name: x}", "rules must be a list"),
        ("- just a list", "a mapping with 'rules'"),
        ("rules: [", "is not YAML at line 1, column 9: expected the node content"),
    ],
)
def test_a_bad_rules_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    with pytest.raises(PiiRulesError, match=re.escape(reason)):
        load_rules(_rules_file(tmp_path, text))


def test_the_secret_is_made_once_private_and_then_read(tmp_path: Path) -> None:
    path = tmp_path / "stack" / "pii.key"
    first = load_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == first and len(first) == 64
    assert Scrubber.from_files("", path).token("x") == Scrubber(shipped_rules(), first).token("x")
    path.write_text("short\n")
    with pytest.raises(PiiRulesError, match="at least 32"):
        load_secret(path)


def test_the_readme_example_is_a_working_rules_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## PII rules") : readme.index("## Real telemetry")]
    (example,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    rules = load_rules(_rules_file(tmp_path, example))
    assert [r.name for r in rules] == [
        "customers", "user_labels", "phone_numbers", "ipv4",
        "secret_labels", "url_credentials", "bearer_tokens", "jwts", "api_keys", "emails", "ipv6",
    ]  # fmt: skip
    scrubber = Scrubber(rules, SECRET)
    scrubbed = scrubber.labels(
        {"customer_id": "acme", "user_name": "ada", "note": "call +441234567890",
         "inside": "10.1.2.3", "outside": "192.0.2.1"}
    )  # fmt: skip
    assert scrubbed == {
        "customer_id": scrubber.token("acme"),
        "note": f"call {REDACTED}",
        "inside": "10.1.2.3",
        "outside": scrubber.token("192.0.2.1"),
    }
