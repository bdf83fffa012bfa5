"""The HTTP clients the platform opens to its own services: one place for their connection limits.

uvicorn closes a keep-alive connection after 5 s of silence (``timeout_keep_alive``) and httpx keeps an
idle one for 5 s too: a request sent on a connection the server is closing at that instant fails with
``ReadError`` or ``RemoteProtocolError`` (seen under load in the e2e run). Our clients let idle connections
go well before the server does.
"""

from typing import Any

import httpx

KEEPALIVE_EXPIRY_S = 2.0
HTTP_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY_S)


def async_client(*, limits: httpx.Limits = HTTP_LIMITS, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` to one of our services, with :data:`HTTP_LIMITS` unless told otherwise."""
    return httpx.AsyncClient(limits=limits, **kwargs)
