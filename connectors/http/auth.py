"""Who gets in: an API key with the role a door needs, within the rate limits.

:class:`Gatekeeper` holds the rules, whatever the server (the FastAPI stack uses it through
:func:`connectors.http.app.require`; the gateway's WebSocket routes call it directly):

1. each address may make ``per_address`` requests a second (bursts of twice that);
2. a door needs a key from the keys file; a missing or unknown key gets 401, and each address
   may fail ``auth_failures`` times a minute (a burst of that many), after which its failures
   get 429 with ``Retry-After`` until it may try again; a valid key still gets in meanwhile;
3. the key must have the door's role (403 otherwise);
4. each key may make ``per_key`` requests a second (bursts of twice that).

Every refusal past the limits is 429 with ``Retry-After``, answered only after a delay (the
wait, at least 1 s and at most ``refusal_delay_s``, 1 s): a flood is held to as many requests
a second as it keeps connections open, rather than to what the server can answer, so the
clients within their limits keep their latency.

Every refused authentication (rules 2 and 3: a missing, unknown or throttled key, a key
without the role) is handed to ``audit`` as a :class:`Refusal`, so the audit trail sees every
door's refusals in this one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from connectors.http.keys import ApiKey, KeysFile
from connectors.http.limits import TokenBuckets, retry_after

_KEY_HELP = (
    "send Authorization: Bearer KEY, X-API-Key: KEY or ?api_key=KEY with a key from "
    "`foresight keys create`"
)


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per key and per address, and failed authentications per minute per
    address (0: no limit); the longest a 429 is held back."""

    per_key: float = 100.0
    per_address: float = 200.0
    auth_failures: int = 10
    refusal_delay_s: float = 1.0


@dataclass(frozen=True)
class Refusal:
    """A refused authentication, for the audit trail: from where, with which key (when it
    was known), at which door (``target``), needing which role, and why."""

    address: str
    key: ApiKey | None
    status: int
    role: str
    target: str
    reason: str


@dataclass(frozen=True)
class Admission:
    """The answer at a door: the key let in, or the refusal (status, message, headers), to be
    sent after ``delay`` seconds."""

    key: ApiKey | None = None
    status: int = 200
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.status == 200


class Gatekeeper:
    """Checks keys against a :class:`KeysFile` and applies :class:`RateLimits` (the buckets
    refill by ``clock``); hands each refused authentication to ``audit``."""

    def __init__(
        self,
        keys: KeysFile,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        audit: Callable[[Refusal], None] | None = None,
    ) -> None:
        self.keys = keys
        self.audit = audit
        self.limits = limits = limits or RateLimits()
        self._per_address = TokenBuckets(limits.per_address, 2 * limits.per_address, clock=clock)
        self._per_key = TokenBuckets(limits.per_key, 2 * limits.per_key, clock=clock)
        self._failures = TokenBuckets(limits.auth_failures / 60, limits.auth_failures, clock=clock)

    def _too_many(self, wait: float, message: str, key: ApiKey | None = None) -> Admission:
        return Admission(
            key=key,
            status=429,
            message=message,
            headers=retry_after(wait),
            delay=min(max(wait, 1.0), self.limits.refusal_delay_s),
        )

    def arrive(self, address: str) -> Admission:
        """Rule 1, for every request, keyed or not."""
        wait = self._per_address.take(address)
        if wait:
            return self._too_many(
                wait,
                f"too many requests from {address}: at most {self.limits.per_address:g} a "
                f"second; retry in {wait:.1f} s",
            )
        return Admission()

    def admit(self, address: str, presented: str | None, role: str, target: str = "") -> Admission:
        """Rules 2 to 4, for a request to ``target`` (its path) at a door that needs ``role``."""
        key = self.keys.find(presented)
        if key is None:
            wait = self._failures.take(address)
            if wait:
                refusal = self._too_many(
                    wait,
                    f"too many failed authentications from {address}; retry in {wait:.0f} s "
                    "with a valid key",
                )
            else:
                what = "unknown" if presented else "missing"
                refusal = Admission(status=401, message=f"{what} API key: {_KEY_HELP}")
            return self._refused(refusal, address, role, target)
        if role not in key.roles:
            refusal = Admission(
                key=key,
                status=403,
                message=f"key {key.id} ({key.name}) has the roles "
                f"{', '.join(sorted(key.roles))}; this needs the {role} role",
            )
            return self._refused(refusal, address, role, target)
        wait = self._per_key.take(key.id)
        if wait:
            return self._too_many(
                wait,
                f"too many requests with key {key.id}: at most {self.limits.per_key:g} a "
                f"second; retry in {wait:.1f} s",
                key,
            )
        return Admission(key=key)

    def _refused(self, admission: Admission, address: str, role: str, target: str) -> Admission:
        if self.audit is not None:
            self.audit(
                Refusal(address, admission.key, admission.status, role, target, admission.message)
            )
        return admission
