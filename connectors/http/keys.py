"""API keys: random, stored hashed with their roles in one keys file, checked in constant time.

A key is ``fsk_`` and 43 URL-safe characters (32 random bytes). The keys file
(``FORESIGHT_KEYS_FILE``) keeps, per key, an id, a name, its roles, the SHA-256 of the key and
when it was made; never the key itself. Roles say what a key may do: ``read`` (live feed,
history, SQL), ``write`` (ingestion), ``operate`` (model and connector changes).

A server started without a keys file makes one with a single key of every role, prints that
key once, and saves it for local clients in the credentials file (``FORESIGHT_CREDENTIALS_FILE``,
mode 0600). Clients take their key from ``FORESIGHT_API_KEY``, else from that file
(:func:`client_key`). Running servers see ``foresight keys create`` and ``revoke`` within a
request: the file is read again whenever it changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from connectors.private_files import write_private
from schemas.field_rules import control_problem

log = logging.getLogger(__name__)

READ, WRITE, OPERATE = "read", "write", "operate"
ROLES = (READ, WRITE, OPERATE)
CLIENT_KEY_ENV = "FORESIGHT_API_KEY"
KEY_PREFIX = "fsk_"
FIRST_KEY_NAME = "first-start"
MAX_NAME = 64
_MAX_PRESENTED = 512  # longer than any key: refused without hashing

# Keys that Foresight's documentation shows (tests/connectors/test_http_keys.py finds every
# key string in README and docs examples and checks it is here): anyone can read them, so no
# server listening beyond the loopback accepts one.
DOCUMENTED_KEYS = frozenset({"dev-key", "KEY", "YOUR_KEY"})


class KeysError(ValueError):
    """A key, a role, a name or the keys file is not what it should be; the message says why."""


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 of ``key`` as hex, as the keys file stores it."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_roles(text: str) -> frozenset[str]:
    """``"read,write"`` as a set of roles; raises :class:`KeysError` naming an unknown one."""
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise KeysError(
            f"roles {text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}; "
            f"give one or more of {', '.join(ROLES)}, comma separated"
        )
    return roles


@dataclass(frozen=True)
class ApiKey:
    """One key as the keys file holds it: who it is and what it may do, not the key."""

    id: str
    name: str
    roles: frozenset[str]
    sha256: str
    created: str

    @classmethod
    def for_key(cls, key: str, name: str, roles: Iterable[str]) -> ApiKey:
        """The entry of ``key``, with a fresh id and the time now."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise KeysError(f"a key's name must be 1 to {MAX_NAME} characters, got {name!r}")
        problem = control_problem(name)  # one line of `keys list` and of the audit trail
        if problem:
            raise KeysError(f"a key's name {name!r} {problem}")
        return cls(
            id="k" + secrets.token_hex(4),
            name=name,
            roles=parse_roles(",".join(roles)),
            sha256=hash_key(key),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The entry as the keys file and ``foresight keys list --json`` show it."""
        roles = [r for r in ROLES if r in self.roles]
        return {"id": self.id, "name": self.name, "roles": roles, "created": self.created}

    def stored(self) -> dict[str, Any]:
        return {**self.as_dict(), "sha256": self.sha256}


def _entry(raw: Any, path: Path) -> ApiKey:
    try:
        return ApiKey(
            id=str(raw["id"]),
            name=str(raw["name"]),
            roles=parse_roles(",".join(raw["roles"])),
            sha256=str(raw["sha256"]),
            created=str(raw["created"]),
        )
    except (KeyError, TypeError, KeysError) as error:
        raise KeysError(f"{path}: a key entry is malformed ({error}): {raw!r:.200}") from error


class KeysFile:
    """The keys file: create, list, revoke, and :meth:`find` the entry of a presented key.

    Examples
    --------
    >>> import tempfile
    >>> keys = KeysFile(Path(tempfile.mkdtemp()) / "keys.json")
    >>> entry, key = keys.create("agents", ["write"])
    >>> keys.find(key) == entry, keys.find("wrong"), sorted(entry.roles)
    (True, None, ['write'])
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._entries: tuple[ApiKey, ...] = ()

    # -- reading -----------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.is_file()

    def _read(self) -> tuple[ApiKey, ...]:
        try:
            loaded = json.loads(self.path.read_text())
            raws = loaded["keys"]
        except FileNotFoundError:
            return ()
        except (ValueError, KeyError, TypeError) as error:
            raise KeysError(
                f"{self.path} is not a Foresight keys file ({error}); manage it with "
                "`foresight keys`, or move it away to start with a new key"
            ) from error
        return tuple(_entry(raw, self.path) for raw in raws)

    def entries(self) -> tuple[ApiKey, ...]:
        """Every key entry, read from the file now; raises :class:`KeysError` if malformed."""
        return self._read()

    def _current(self) -> tuple[ApiKey, ...]:
        """The entries, read again only when the file changed since the last look."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._entries = None, ()
            return ()
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self._signature:
            try:
                self._entries = self._read()
            except KeysError as error:  # keep serving with the keys last read
                log.error("%s; still using the %d keys read before", error, len(self._entries))
            self._signature = signature
        return self._entries

    def find(self, presented: str | None) -> ApiKey | None:
        """The entry of ``presented``, or ``None``; every stored hash is compared, in constant
        time, so the answer takes as long whichever key matched."""
        if not presented or len(presented) > _MAX_PRESENTED:
            return None
        digest = hash_key(presented)
        found = None
        for entry in self._current():
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return found

    def documented(self) -> list[ApiKey]:
        """Entries whose key is one of :data:`DOCUMENTED_KEYS` (anyone can read those)."""
        public = {hash_key(k) for k in DOCUMENTED_KEYS}
        return [e for e in self.entries() if e.sha256 in public]

    # -- changing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[ApiKey]]:
        """The entries, under an exclusive lock; the list as left is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = list(self._read())
            yield entries
            write_private(self.path, self._text(entries))
        finally:
            os.close(lock)  # releases the lock

    @staticmethod
    def _text(entries: Iterable[ApiKey]) -> str:
        return json.dumps({"keys": [e.stored() for e in entries]}, indent=2) + "\n"

    def create(self, name: str, roles: Iterable[str], key: str | None = None) -> tuple[ApiKey, str]:
        """Add a key (a fresh random one unless ``key`` is given); returns its entry and the
        key, which is not stored and cannot be shown again."""
        key = new_key() if key is None else key.strip()
        if not key or len(key) > _MAX_PRESENTED or any(c.isspace() for c in key):
            raise KeysError(
                f"a key must be 1 to {_MAX_PRESENTED} characters without spaces; "
                "leave it out to get a random one"
            )
        entry = ApiKey.for_key(key, name, roles)
        with self._locked() as entries:
            if any(hmac.compare_digest(e.sha256, entry.sha256) for e in entries):
                raise KeysError("that key is already in the keys file; pick another")
            entries.append(entry)
        return entry, key

    def revoke(self, key_id: str) -> ApiKey:
        """Remove the key ``key_id``; raises :class:`KeysError` when there is none."""
        with self._locked() as entries:
            found = [e for e in entries if e.id == key_id]
            if not found:
                known = ", ".join(e.id for e in entries) or "none"
                raise KeysError(f"no key {key_id!r} in {self.path}; the keys are: {known}")
            entries.remove(found[0])
        return found[0]

    def create_first(self, credentials: Path) -> str | None:
        """Make the keys file with one key of every role, when there is no keys file.

        The key is saved in ``credentials`` (mode 0600) for local clients and returned, to be
        shown once. Returns ``None`` when the keys file exists: made earlier, or just now by
        another server starting beside this one (the file appears whole or not at all).
        """
        if self.path.exists():
            return None
        key = new_key()
        entry = ApiKey.for_key(key, FIRST_KEY_NAME, ROLES)
        if not write_private(self.path, self._text([entry]), replace=False):
            return None
        write_private(Path(credentials), key + "\n")
        return key


def presented_key(headers: Mapping[str, str], query: str = "") -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY``, ``Authorization: Basic`` with
    the key as password (Prometheus' ``basic_auth``), ``X-API-Key: KEY``, or ``?api_key=KEY``
    (browsers cannot set headers on a WebSocket)."""
    from_query = parse_qs(query).get("api_key") if query else None
    if from_query:
        return from_query[0]
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return headers.get("x-api-key") or None


def client_key(credentials: Path | str, environ: Mapping[str, str] | None = None) -> str | None:
    """The key a local client sends: ``FORESIGHT_API_KEY``, else the credentials file's."""
    env = os.environ if environ is None else environ
    if env.get(CLIENT_KEY_ENV, "").strip():
        return env[CLIENT_KEY_ENV].strip()
    try:
        return Path(credentials).read_text().strip() or None
    except OSError:
        return None
