"""The one HTTP stack of Foresight's user-facing servers: FastAPI on uvicorn (ASGI).

One module per job: :mod:`~connectors.http.errors` (the one error body),
:mod:`~connectors.http.keys` (API keys, hashed, with roles, in the keys file),
:mod:`~connectors.http.limits` (token buckets), :mod:`~connectors.http.auth` (who gets in:
keys, roles, rate limits, failed-authentication throttling) and :mod:`~connectors.http.app`
(the app factory and the uvicorn server, configured in one place).
"""
