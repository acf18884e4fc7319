"""The one error body of every Foresight HTTP server.

Every refusal, whichever door and whichever status, is
``{"error": {"code": "...", "message": "...", "details": [...]}}``: ``code`` is the status in
words (``not_found``, ``too_many_requests``...), ``message`` says what was wrong and what to do,
``details`` lists the particular problems (for a refused agent event: ``index``, ``field`` and
``reason`` of each). A server error answers the same shape and never a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_code(status: int) -> str:
    """The status in words, as the ``code`` of an error body: 404 is ``not_found``."""
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def error_body(
    status: int, message: str, details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The error body for ``status``: ``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": error_code(status), "message": message, "details": list(details)}}


class ErrorInfo(BaseModel):
    """What went wrong: ``code`` (the status in words), ``message``, ``details``."""

    code: str = Field(examples=["unprocessable_entity"])
    message: str
    details: list[dict[str, Any]] = Field(
        description="particular problems, each naming its field and reason where there is one"
    )


class ErrorBody(BaseModel):
    """The one error body of every Foresight server."""

    error: ErrorInfo


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused: the error body says why"},
    "5XX": {"model": ErrorBody, "description": "the server or a store it needs failed"},
}
"""What the OpenAPI document says of every route's refusals (and, so, not FastAPI's own
422 body: this server answers 422 with the one error body too)."""


class ApiError(Exception):
    """A refusal a handler raises; it becomes the error body with its status and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


class _ErrorResponse(JSONResponse):
    """JSON in ASCII: a refusal may quote what was sent, lone surrogates included, and those
    have no UTF-8 form; escaped, they reach the client as the ``\\ud800`` it sent."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    status: int,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error body as a response (401 also names the scheme, as HTTP asks)."""
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="foresight"')
    return _ErrorResponse(error_body(status, message, details), status_code=status, headers=extra)


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.message, error.details, error.headers)


def _shown(path: str, limit: int = 200) -> str:
    """``path`` quoted for a message, its first ``limit`` characters when it is longer."""
    if len(path) <= limit:
        return repr(path)
    return f"{path[:limit]!r}... ({len(path):,} characters)"


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    status = error.status_code
    path = _shown(request.url.path)
    if status == 404:
        message = f"no route {path}"
    elif status == 405:
        allowed = (error.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {path}; use {allowed}"
    else:
        message = str(error.detail)
    return error_response(status, message, headers=error.headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    details = [
        {"field": ".".join(str(part) for part in problem.get("loc", ())), "reason": problem["msg"]}
        for problem in error.errors()
    ]
    return error_response(422, "the request does not match what this route takes", details)


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(
        500, "the server failed on this request; its log has the details, the request did not"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with the one error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
