"""``foresight certs dev``: a local CA and a server certificate, for TLS on this machine."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from deploy.local.certs import LOCAL_NAMES, CertsError, certs_folder, make_dev_certs
from streams.settings import Settings


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    folder = Path(args.dir).resolve() if args.dir else certs_folder(Path(settings.stack_dir))
    try:
        made = make_dev_certs(folder, args.name)
    except CertsError as error:
        print(f"foresight certs dev: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(made.as_dict(), indent=2))
        return 0
    print(f"{'made' if made.new_ca else 'kept'} the development CA  {made.ca}")
    print(f"server certificate             {made.cert}")
    print(f"its private key (0600)         {made.key}")
    print(f"for {', '.join(made.names)}; valid until {made.expires:%Y-%m-%d}")
    print("\nTLS on every Foresight server, and clients that trust the CA:\n")
    for name, value in made.settings().items():
        print(f"    export {name}={shlex.quote(value)}")
    return 0


def register(subparsers: Any) -> None:
    certs = subparsers.add_parser("certs", help="certificates for TLS")
    kinds = certs.add_subparsers(dest="kind", required=True)
    dev = kinds.add_parser(
        "dev",
        help="make a local CA (once) and a server certificate for this machine, for development",
    )
    dev.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="NAME",
        help=f"another host name or IP address the servers answer on (repeatable); "
        f"{', '.join(LOCAL_NAMES)} are always in",
    )
    dev.add_argument("--dir", help="where to write (default: certs under FORESIGHT_STACK_DIR)")
    dev.add_argument("--json", action="store_true", help="print the paths and settings as JSON")
    dev.set_defaults(func=_dev)
