"""``foresight keys create | list | revoke``: the API keys the servers accept.

Keys live hashed in ``FORESIGHT_KEYS_FILE``; ``create`` shows a new key once. Running servers
see the change at their next request.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from connectors.http.keys import DOCUMENTED_KEYS, ROLES, KeysError, parse_roles
from streams.access import keys_file
from streams.settings import Settings


def _fail(verb: str, error: Exception) -> int:
    print(f"foresight keys {verb}: {error}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace, settings: Settings) -> int:
    keys = keys_file(settings)
    try:
        roles = parse_roles(args.roles)
        chosen = sys.stdin.readline().strip() if args.key_stdin else None
        entry, key = keys.create(args.name, roles, chosen)
    except KeysError as error:
        return _fail("create", error)
    if args.json:
        print(json.dumps({**entry.as_dict(), "key": key}, indent=2))
    else:
        print(f"created key {entry.id} ({entry.name}) with roles {', '.join(sorted(roles))}")
        if not args.key_stdin:
            print(f"\n    {key}\n")
            print("It is shown this once: give it to the client now. Clients send it as")
            print("'Authorization: Bearer KEY', 'X-API-Key: KEY', or FORESIGHT_API_KEY=KEY.")
    if key in DOCUMENTED_KEYS:
        print(
            f"warning: {key!r} is an example key from the documentation; servers listening "
            "beyond the loopback refuse to start while it is a key",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    keys = keys_file(settings)
    try:
        rows: list[dict[str, Any]] = [e.as_dict() for e in keys.entries()]
    except KeysError as error:
        return _fail("list", error)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no keys in {keys.path}; create one with `foresight keys create NAME --roles ...`")
    else:
        print(f"{'id':<11}{'name':<24}{'roles':<22}created")
        for row in rows:
            print(f"{row['id']:<11}{row['name']:<24}{','.join(row['roles']):<22}{row['created']}")
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    try:
        entry = keys_file(settings).revoke(args.id)
    except KeysError as error:
        return _fail("revoke", error)
    if args.json:
        print(json.dumps({**entry.as_dict(), "revoked": True}, indent=2))
    else:
        print(f"revoked key {entry.id} ({entry.name}); servers refuse it from the next request")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke the API keys")
    verbs = parser.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="make a key with roles; shows the key once")
    create.add_argument("name", help="who or what holds the key, e.g. prometheus, agents-eu")
    create.add_argument(
        "--roles",
        required=True,
        help=f"comma separated, of {', '.join(ROLES)}: read (feeds, history, SQL), write "
        "(ingestion), operate (model and connector changes)",
    )
    create.add_argument(
        "--key-stdin",
        action="store_true",
        help="use the key read from standard input instead of a random one (to keep a key "
        "clients already send)",
    )
    create.add_argument("--json", action="store_true", help="print the entry and key as JSON")
    create.set_defaults(func=_create)
    listing = verbs.add_parser("list", help="ids, names, roles and creation times (no keys)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)
    revoke = verbs.add_parser("revoke", help="remove a key by id")
    revoke.add_argument("id", help="the key's id, from `foresight keys list`")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(func=_revoke)
