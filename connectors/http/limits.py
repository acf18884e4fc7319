"""Limits: token buckets (requests per key, per address, failed authentications per address)
and the request body size.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.http.errors import ApiError, error_response


class TokenBuckets:
    """One token bucket per name (a key id, an address): ``rate`` tokens a second, holding at
    most ``burst``. A rate of 0 means no limit.

    At most ``max_names`` buckets are kept; the least recently used go first (a name seen again
    after that starts with a full bucket).

    Examples
    --------
    >>> buckets = TokenBuckets(rate=1.0, burst=2)
    >>> [buckets.take("a", now=0.0) for _ in range(3)], buckets.take("b", now=0.0)
    ([0.0, 0.0, 1.0], 0.0)
    >>> buckets.take("a", now=1.0)
    0.0
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        max_names: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or (rate > 0 and burst < 1):
            raise ValueError(
                f"a token bucket needs rate >= 0 and burst >= 1, got {rate} and {burst}"
            )
        self.rate = rate
        self.burst = float(burst)
        self.max_names = max_names
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, name: str, now: float | None = None) -> float:
        """Take a token for ``name``: 0.0 when there was one, else the seconds until there is."""
        if self.rate == 0:
            return 0.0
        now = self._clock() if now is None else now
        tokens, then = self._buckets.pop(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[name] = (tokens, now)
        if len(self._buckets) > self.max_names:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> dict[str, str]:
    """The ``Retry-After`` header for a wait of ``wait`` seconds (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(wait)))}


class PayloadTooLargeError(ApiError):
    """The body is larger than the server takes (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is larger than {limit:,} bytes; send it in smaller parts"
        )


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413, announced (``Content-Length``) or
    streamed (counted as it is read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                error = PayloadTooLargeError(self.max_bytes)
                await error_response(error.status, error.message)(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted, send)
