"""Request body size limits (issue 15, OWASP API4): every request body is at most `MAX_BODY_BYTES`, one sent
to an upload route (`rate_class("upload")`: photos, images, bulk imports) at most `MAX_UPLOAD_BYTES`; a larger
one is a 413 `payload_too_large`, refused on its declared Content-Length before a byte is read, or as soon as
the bytes received pass the limit (a chunked body declares none). Routes keep their own tighter limits
(a report photo, a payment notification). Sits outside kit.inputs' guard, which reads JSON bodies whole."""

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.errors import problem
from kit.ratelimit import RateClass


class PayloadTooLarge(HTTPException):
    """Raised by the counting receive: a route reading the body gets it as an HTTPException (kit.errors
    renders it as 413 `payload_too_large`); a middleware reading it lets it reach BodyLimitMiddleware."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes")
        self.limit = limit
        self.problem_extra = {"max_bytes": limit}


def upload_routes(app: FastAPI) -> list[BaseRoute]:
    """The routes that declare the `upload` rate class (kit.ratelimit)."""
    return [r for r in _flatten(app.router.routes) if "upload" in _declared_classes(r)]


def _declared_classes(route: BaseRoute) -> set[str]:
    return {d.dependency.name for d in getattr(route, "dependencies", []) if isinstance(d.dependency, RateClass)}


def _flatten(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    found: list[BaseRoute] = []
    for route in routes:
        nested = getattr(route, "original_router", None)  # FastAPI keeps included routers nested
        found.extend(_flatten(nested.routes) if nested is not None else [route])
    return found


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self._fastapi = fastapi
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self._uploads: list[BaseRoute] | None = None  # known once every router is included

    def limit_for(self, scope: Scope) -> int:
        if self._uploads is None:
            self._uploads = upload_routes(self._fastapi)
        if any(route.matches(scope)[0] == Match.FULL for route in self._uploads):
            return self.max_upload_bytes
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return problem(
        413, "payload_too_large", "Payload too large", f"The request body is larger than {limit} bytes", max_bytes=limit
    )
