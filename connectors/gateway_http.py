"""The live page's static files, served by the gateway (``/`` and ``/static/<name>``)."""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

from connectors.http.errors import ApiError

STATIC_PACKAGE = "connectors"
STATIC_FOLDER = "gateway_static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page loads only its own files and talks only to this gateway.
_PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'"
)


class StaticFiles:
    """The live page's files, read once from the package (``connectors/gateway_static``)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)
        for entry in folder.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in _CONTENT_TYPES:
                self._files[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
        if "index.html" not in self._files:
            raise FileNotFoundError(
                f"{STATIC_PACKAGE}/{STATIC_FOLDER}/index.html is missing from the installed "
                "package; reinstall Foresight with its package data"
            )

    def response(self, name: str) -> Response:
        """The file ``name`` (no folders); :class:`ApiError` 404 when there is no such file."""
        found = self._files.get(name)
        if found is None:
            raise ApiError(
                404, f"no static file {name!r}; the page's files are {sorted(self._files)}"
            )
        body, content_type = found
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if name.endswith(".html"):
            headers["Content-Security-Policy"] = _PAGE_POLICY
        return Response(body, media_type=content_type, headers=headers)
