"""Test helper: a local HTTP endpoint that records every request, standing in for a tool."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """A local HTTP endpoint on a free port that records every request.

    It answers ``status(path)``: 202 unless told otherwise.
    """

    def __init__(self, status: Callable[[str], int] = lambda path: 202) -> None:
        self.requests: list[Request] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(
                    Request(self.command, self.path, dict(self.headers), json.loads(raw))
                )
                self.send_response(status(self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def at(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@contextmanager
def serving(endpoint: Receiver) -> Iterator[Receiver]:
    threading.Thread(target=endpoint.server.serve_forever, daemon=True).start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
