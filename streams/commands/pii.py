"""``foresight pii rules | hash``: the PII rules ingestion applies, and the token of a value.

``rules`` lists the rules in force (``FORESIGHT_PII_RULES`` first, then the shipped ones it
keeps), so a rules file can be checked before ``foresight ingest`` starts with it. ``hash``
gives the token a value becomes under the ``hash`` action, with the secret of
``FORESIGHT_PII_KEY_FILE``, so a person who knows an address or an e-mail can find its entity
and rows (run it where that file is; it is never made here).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from connectors.pii import PiiRulesError, Scrubber, load_rules, load_secret
from streams.settings import Settings


def _fail(verb: str, error: Exception) -> int:
    print(f"foresight pii {verb}: {error}", file=sys.stderr)
    return 2


def _rules(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rules = load_rules(settings.pii_rules)
    except PiiRulesError as error:
        return _fail("rules", error)
    rows = [{**r.as_dict(), "description": r.description} for r in rules]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        selects = " and ".join(
            f"{k} {row[k]!r}" for k in ("key", "key_regex", "value_regex") if k in row
        )
        print(f"{row['name']:<18}{row['action']:<8}{row['description'] or selects}")
    return 0


def _hash(args: argparse.Namespace, settings: Settings) -> int:
    try:
        scrubber = Scrubber([], load_secret(settings.pii_key_file, create=False))
    except PiiRulesError as error:
        return _fail("hash", error)
    tokens: dict[str, Any] = {value: scrubber.token(value) for value in args.values}
    if args.json:
        print(json.dumps(tokens, indent=2))
    else:
        for value, token in tokens.items():
            print(f"{token}  {value}")
    return 0


def register(subparsers: Any) -> None:
    pii = subparsers.add_parser(
        "pii", help="the PII rules ingestion applies, and the token a hashed value becomes"
    )
    verbs = pii.add_subparsers(dest="verb", required=True, metavar="VERB")
    rules = verbs.add_parser("rules", help="the rules in force, in the order they run")
    rules.add_argument("--json", action="store_true", help="print as JSON")
    rules.set_defaults(func=_rules)
    hashed = verbs.add_parser("hash", help="the token each value becomes when a rule hashes it")
    hashed.add_argument("values", nargs="+", metavar="VALUE", help="e.g. 10.0.0.5")
    hashed.add_argument("--json", action="store_true", help="print as JSON")
    hashed.set_defaults(func=_hash)
