"""Limits: token buckets (requests per key, per address, failed authentications per address),
the request body's size and the pace it arrives at.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.http.errors import error_response


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


class BodyRefusedError(HTTPException):
    """A body refused while it is read. An HTTPException, not an ApiError: FastAPI turns any
    other exception raised while it reads a route's body into 400 "There was an error parsing
    the body", and answers these with their own status and message (the one error body)."""


def payload_too_large(limit: int) -> BodyRefusedError:
    """The body is larger than the server takes (413)."""
    return BodyRefusedError(
        413, f"the request body is larger than {limit:,} bytes; send it in smaller parts"
    )


# A body must arrive within BODY_TIMEOUT_S of its first read, and a second more for every
# BODY_MIN_RATE bytes received (Apache's mod_reqtimeout default, body=20,MinRate=500): a large
# body on a slow link gets the time it needs, while a client announcing a body and sending a
# byte now and then no longer holds a request, its task and its connection for ever.
BODY_TIMEOUT_S = 20.0
BODY_MIN_RATE = 500


def body_too_slow(received: int, waited_s: float) -> BodyRefusedError:
    """The body did not arrive at the pace the server requires (408). The connection closes:
    the rest of the body may still be on its way."""
    return BodyRefusedError(
        408,
        f"the request body came too slowly: {received:,} bytes in {waited_s:.1f} s (the server "
        f"waits {BODY_TIMEOUT_S:g} s for a body, and a second more for every {BODY_MIN_RATE:,} "
        f"bytes received)",
        headers={"Connection": "close"},
    )


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413, announced (``Content-Length``) or
    streamed (counted as it is read); a body slower than :data:`BODY_TIMEOUT_S` and
    :data:`BODY_MIN_RATE` allow gets 408."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                error = payload_too_large(self.max_bytes)
                await error_response(error.status_code, error.detail)(scope, receive, send)
                return
        received = 0
        loop = asyncio.get_running_loop()
        started: float | None = None
        complete = False

        async def counted() -> Message:
            nonlocal received, started, complete
            if complete:  # what follows the body (a disconnect) may take as long as it takes
                return await receive()
            started = loop.time() if started is None else started
            deadline = started + BODY_TIMEOUT_S + received / BODY_MIN_RATE
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise body_too_slow(received, loop.time() - started) from None
            complete = not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise payload_too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)
