"""PII rules: scrub label values and event fields at the door, before anything reaches Kafka.

A rule selects values by their key (a label name or an event field), exactly (``key``) or by
a regular expression (``key_regex``), and/or by their content (``value_regex``), and does one
of three things to what it selects:

* ``drop``: the label goes (an optional event field becomes null; a required one, which
  cannot go, is redacted instead);
* ``hash``: replaced by ``hash-`` and the first 16 hex digits of the keyed HMAC-SHA-256 of
  the value, with a secret from a file: the same value always gives the same token, so
  joins and entity identity hold, while the value cannot be read back or guessed by hashing
  candidates without the secret;
* ``redact``: replaced by ``[redacted]``.

With a ``value_regex``, ``hash`` and ``redact`` replace each match inside the value and leave
the rest (``10.0.0.5:9100`` becomes ``hash-…:9100``), and ``drop`` drops the label when the
value holds a match; without one, the whole value is the match. Rules run in order, each on
what the previous ones left; a dropped value ends its run. Metric names (``__name__``) and
label names are never scrubbed.

A rules file (YAML, the ``FORESIGHT_PII_RULES`` setting) holds ``rules:``, a list that runs
first, and optionally ``shipped:``, which shipped rules follow them (all by default; ``[]``
leaves only yours). Every rule has a ``name``, which labels its count in
``foresight_pii_scrubbed_total{rule, action}`` (so the label's values are bounded by the
rules in force).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.private_files import write_private
from connectors.prometheus import PII_SCRUBBED
from models.rules_file import read_rules_file

ACTIONS = ("drop", "hash", "redact")
REDACTED = "[redacted]"
HASH_PREFIX = "hash-"
HASH_HEX_DIGITS = 16  # 64 bits: collisions are negligible among the values of one deployment
NAME = "__name__"
MAX_RULES = 200
_RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_RULE_KEYS = {"name", "action", "key", "key_regex", "value_regex", "description"}
_CACHE_LIMIT = 100_000
#: AgentEvent text fields the rules scrub; a dropped optional one becomes null, a dropped
#: required one ``[redacted]``. Workflow and parent ids hash like task ids, so a workflow
#: still groups its tasks.
_AGENT_EVENT_TEXT = ("agent", "task_id", "task_type", "error_class", "workflow_id",
                     "parent_task_id")  # fmt: skip
_REQUIRED_TEXT = ("agent", "task_id", "task_type")

# An IPv4 address: four octets of 0-255, not inside a longer dotted number or word.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w.])"
_H16 = r"[0-9A-Fa-f]{1,4}"
# An IPv6 address in any of RFC 4291's forms (full, compressed with ::, IPv4-suffixed).
_IPV6 = (
    r"(?<![\w:.])(?:"
    rf"(?:{_H16}:){{7}}{_H16}"
    rf"|(?:{_H16}:){{1,7}}:"
    rf"|(?:{_H16}:){{1,6}}:{_H16}"
    rf"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}"
    rf"|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    rf"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}"
    rf"|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    rf"|{_H16}:(?::{_H16}){{1,6}}"
    rf"|:(?:(?::{_H16}){{1,7}}|:)"
    rf"|(?:{_H16}:){{1,4}}:(?:\d{{1,3}}\.){{3}}\d{{1,3}}"
    rf"|::(?:ffff(?::0{{1,4}})?:)?(?:\d{{1,3}}\.){{3}}\d{{1,3}}"
    r")(?![\w:.])"
)

#: The rules Foresight ships, in the order they run after a rules file's own.
SHIPPED_RULES: tuple[Mapping[str, str], ...] = (
    {
        "name": "secret_labels",
        "key_regex": r"(?i)(?:^|[_.-])(?:password|passwd|secret|token|api[_-]?key|access[_-]?key"
        r"|authorization|credentials?|cookie)(?:$|[_.-])",
        "action": "redact",
        "description": "labels and fields named like a secret: password, token, api_key...",
    },
    {
        "name": "url_credentials",
        "value_regex": r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
        "action": "redact",
        "description": "user:password in a URL",
    },
    {
        "name": "bearer_tokens",
        "value_regex": r"(?i)\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}",
        "action": "redact",
        "description": "an Authorization header's credentials",
    },
    {
        "name": "jwts",
        "value_regex": r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        "action": "redact",
        "description": "JSON web tokens",
    },
    {
        "name": "api_keys",
        "value_regex": r"\b(?:fsk_[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{20,}"
        r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
        r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35})",
        "action": "redact",
        "description": "API keys of Foresight, OpenAI, GitHub, Slack, AWS and Google",
    },
    {
        "name": "emails",
        "value_regex": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        "action": "hash",
        "description": "e-mail addresses",
    },
    {"name": "ipv6", "value_regex": _IPV6, "action": "hash", "description": "IPv6 addresses"},
    {"name": "ipv4", "value_regex": _IPV4, "action": "hash", "description": "IPv4 addresses"},
)


class PiiRulesError(ValueError):
    """A PII rule, the rules file or the hash secret is not usable; the message says why."""


@dataclass(frozen=True)
class PiiRule:
    """One rule: which values it selects (by key and/or content) and what it does to them."""

    name: str
    action: str
    key: str | None = None
    key_pattern: re.Pattern[str] | None = None
    value_pattern: re.Pattern[str] | None = None
    description: str = ""

    def selects_key(self, key: str) -> bool:
        if self.key is not None:
            return key == self.key
        return self.key_pattern is None or self.key_pattern.search(key) is not None

    def as_dict(self) -> dict[str, str]:
        """The rule as a rules file writes it."""
        out = {"name": self.name, "action": self.action}
        if self.key is not None:
            out["key"] = self.key
        if self.key_pattern is not None:
            out["key_regex"] = self.key_pattern.pattern
        if self.value_pattern is not None:
            out["value_regex"] = self.value_pattern.pattern
        return out


def _pattern(raw: Mapping[str, Any], field: str, where: str) -> re.Pattern[str] | None:
    text = raw.get(field)
    if text is None:
        return None
    if not isinstance(text, str) or not text:
        raise PiiRulesError(f"{where}: {field} must be a non-empty string, got {text!r}")
    try:
        return re.compile(text)
    except re.error as error:
        raise PiiRulesError(
            f"{where}: {field} {text!r} is not a regular expression: {error}"
        ) from None


def parse_rule(raw: Any, where: str) -> PiiRule:
    """A rule from its mapping (``name``, ``action``, ``key`` or ``key_regex``,
    ``value_regex``, ``description``); raises :class:`PiiRulesError` naming what is wrong.

    >>> parse_rule({"name": "customers", "key": "customer", "action": "hash"}, "x").action
    'hash'
    """
    if not isinstance(raw, Mapping):
        raise PiiRulesError(f"{where}: a rule is a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise PiiRulesError(f"{where}: unknown fields {unknown}; a rule has {sorted(_RULE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
        raise PiiRulesError(
            f"{where}: name {name!r} must be 1 to 64 lower-case letters, digits and _, "
            "starting with a letter (it labels the rule's count in /metrics)"
        )
    where = f"{where} ({name})"
    action = raw.get("action")
    if action not in ACTIONS:
        raise PiiRulesError(f"{where}: action {action!r} must be one of {', '.join(ACTIONS)}")
    key = raw.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise PiiRulesError(f"{where}: key must be a non-empty string, got {key!r}")
    if key is not None and "key_regex" in raw:
        raise PiiRulesError(f"{where}: give key or key_regex, not both")
    if key == NAME:
        raise PiiRulesError(f"{where}: metric names ({NAME}) are never scrubbed")
    rule = PiiRule(
        name=name,
        action=action,
        key=key,
        key_pattern=_pattern(raw, "key_regex", where),
        value_pattern=_pattern(raw, "value_regex", where),
        description=str(raw.get("description", "")),
    )
    if rule.key is None and rule.key_pattern is None and rule.value_pattern is None:
        raise PiiRulesError(f"{where}: select values with key, key_regex or value_regex")
    return rule


def shipped_rules() -> list[PiiRule]:
    """The shipped rules (:data:`SHIPPED_RULES`), parsed."""
    return [parse_rule(raw, f"shipped rule {raw['name']}") for raw in SHIPPED_RULES]


def load_rules(path: str | Path | None) -> list[PiiRule]:
    """The rules of the file at ``path`` followed by the shipped rules it keeps; the shipped
    rules alone when ``path`` is empty. Raises :class:`PiiRulesError`."""
    shipped = {rule.name: rule for rule in shipped_rules()}
    if not path:
        return list(shipped.values())
    mine, kept = read_rules_file(path, "PII", "rules", list(shipped), PiiRulesError)
    rules = [parse_rule(r, f"{path} rules[{i}]") for i, r in enumerate(mine)]
    rules += [shipped[name] for name in kept]
    names = [r.name for r in rules]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PiiRulesError(
            f"{path}: rule names must be unique, and {repeated} repeat (a shipped rule's name "
            "among yours: leave it out of 'shipped' to replace it)"
        )
    if len(rules) > MAX_RULES:
        raise PiiRulesError(f"{path}: {len(rules)} rules; at most {MAX_RULES} are allowed")
    return rules


def load_secret(path: str | Path, create: bool = True) -> bytes:
    """The hash secret in the file at ``path``, made (256 random bits, mode 0600) when there is
    none yet and ``create`` says so; raises :class:`PiiRulesError` when it cannot be read or
    made.

    Every process that hashes must share this file, or the same value gets other tokens.
    """
    path = Path(path)
    try:
        if create:
            write_private(path, secrets.token_hex(32) + "\n", replace=False)
        text = path.read_text().strip()
    except FileNotFoundError:
        raise PiiRulesError(
            f"no PII hash secret at {path}: the first `foresight ingest` makes it; run this "
            "where ingest runs, with its FORESIGHT_PII_KEY_FILE"
        ) from None
    except OSError as error:
        raise PiiRulesError(f"cannot read or make the PII hash secret {path}: {error}") from None
    if len(text) < 32:
        raise PiiRulesError(
            f"the PII hash secret {path} holds {len(text)} characters; it needs at least 32 "
            "(delete it to have a random one made, which changes every hash token)"
        )
    return text.encode()


class Scrubber:
    """Applies rules to label sets and agent events; counts what each rule changed.

    Results are cached per (key, value), since label sets repeat from request to request.

    Examples
    --------
    >>> scrubber = Scrubber(shipped_rules(), secret=b"0" * 32)
    >>> scrubber.labels({"__name__": "up", "instance": "10.0.0.5:9100", "job": "node"})
    {'__name__': 'up', 'instance': 'hash-9f3074fbe9d9a42a:9100', 'job': 'node'}
    >>> scrubber.value("owner", "mail ada@example.com")
    'mail hash-b72ebec9b71b0c2f'
    """

    def __init__(self, rules: Sequence[PiiRule], secret: bytes) -> None:
        self.rules = tuple(rules)
        self._secret = secret
        self._counters = [PII_SCRUBBED.labels(r.name, r.action) for r in self.rules]
        self._cache: dict[tuple[str, str], tuple[str | None, tuple[int, ...]]] = {}

    @classmethod
    def from_files(cls, rules_file: str | Path | None, secret_file: str | Path) -> Scrubber:
        """The rules of ``rules_file`` (the shipped ones when empty) with the secret of
        ``secret_file`` (made when missing)."""
        return cls(load_rules(rules_file), load_secret(secret_file))

    def token(self, value: str) -> str:
        """The stable token that replaces ``value`` when it is hashed."""
        digest = hmac.new(self._secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return HASH_PREFIX + digest.hexdigest()[:HASH_HEX_DIGITS]

    def _apply(self, rule: PiiRule, value: str) -> tuple[str | None, bool]:
        """``rule`` on ``value`` (whose key it selects): the new value (None: dropped), and
        whether it changed anything."""
        pattern = rule.value_pattern
        if pattern is None:
            replaced = {"drop": None, "hash": self.token(value), "redact": REDACTED}
            return replaced[rule.action], True
        if rule.action == "drop":
            found = pattern.search(value) is not None
            return (None if found else value), found
        if rule.action == "hash":
            scrubbed, count = pattern.subn(lambda m: self.token(m.group(0)), value)
        else:
            scrubbed, count = pattern.subn(REDACTED, value)
        return scrubbed, count > 0

    def _scrub(self, key: str, value: str) -> tuple[str | None, tuple[int, ...]]:
        fired: list[int] = []
        current: str | None = value
        for index, rule in enumerate(self.rules):
            if current is None:
                break
            if rule.selects_key(key):
                current, changed = self._apply(rule, current)
                if changed:
                    fired.append(index)
        return current, tuple(fired)

    def value(self, key: str, value: str) -> str | None:
        """``value`` of ``key`` scrubbed; ``None`` when a rule drops it."""
        cached = self._cache.get((key, value))
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[(key, value)] = self._scrub(key, value)
        scrubbed, fired = cached
        for index in fired:
            self._counters[index].inc()
        return scrubbed

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """A label set with every value scrubbed and dropped labels left out; ``__name__``
        stays as it is."""
        out: dict[str, str] = {}
        for key, value in labels.items():
            scrubbed = value if key == NAME else self.value(key, value)
            if scrubbed is not None:
                out[key] = scrubbed
        return out

    def text_fields(
        self,
        records: Sequence[dict[str, Any]],
        required: Sequence[str],
        optional: Sequence[str] = (),
        dropped: str | None = None,
    ) -> list[dict[str, Any]]:
        """Copies of ``records`` with their text fields scrubbed. A ``required`` field the
        rules drop becomes ``[redacted]``; an ``optional`` one becomes ``dropped``."""
        out = []
        for record in records:
            scrubbed = dict(record)
            for field in (*required, *optional):
                if scrubbed.get(field) is not None:
                    value = self.value(field, scrubbed[field])
                    if value is None:
                        value = REDACTED if field in required else dropped
                    scrubbed[field] = value
            out.append(scrubbed)
        return out

    def agent_events(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """AgentEvent records with their text fields and labels scrubbed. A dropped optional
        field becomes null; a required one cannot go and becomes ``[redacted]``."""
        out = self.text_fields(
            records, _REQUIRED_TEXT, [f for f in _AGENT_EVENT_TEXT if f not in _REQUIRED_TEXT]
        )
        for event in out:
            event["labels"] = self.labels(event.get("labels") or {})
        return out

    def quality_snapshots(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """CodeQualitySnapshot records with their repository (a URL may carry a token) and
        source scrubbed; a dropped source becomes empty."""
        return self.text_fields(records, ("repository",), ("source",), dropped="")
