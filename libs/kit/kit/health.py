"""`/livez`, `/readyz` and `/metrics` for operations."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit import tracing
from kit.addresses import app_trusted_proxies, client_address
from kit.correlation import HEADER, new_correlation_id, set_client_address, set_correlation_id
from kit.ratelimit import EXEMPT, rate_class

ReadinessCheck = Callable[[], Awaitable[None]]

HTTP_REQUESTS = Counter("pb_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "pb_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

router = APIRouter(tags=["operations"], dependencies=[rate_class(EXEMPT)])  # probes are never refused


@router.get("/livez", include_in_schema=False)
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, ReadinessCheck] = request.app.state.runtime.readiness_checks
    results: dict[str, str] = {}
    ok = True
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2.0)
            results[name] = "ok"
        except Exception as exc:
            ok = False
            results[name] = f"failing: {exc!r}"[:300]
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": results}, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (the router records the route in the scope it shares)."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


class ObservabilityMiddleware:
    """Sets the correlation id for the request (from `X-Correlation-ID` or new) and records metrics.
    A plain ASGI middleware: no extra task and response stream per request, as BaseHTTPMiddleware
    has, and the correlation id stays in the request's own context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get(HEADER, "")
        traceparent = headers.get(tracing.HEADER) if tracing.enabled() else None
        if 0 < len(incoming) <= 64 and incoming.isprintable():
            cid = incoming
        else:  # a caller that traces but sends no correlation id: its trace id is the correlation id
            cid = tracing.trace_id_of(traceparent) or new_correlation_id()
        set_correlation_id(cid)
        client = scope.get("client")
        peer = str(client[0]) if client else None
        trusted = app_trusted_proxies(scope.get("app"))
        set_client_address(client_address(peer, headers.get("x-forwarded-for"), trusted)[:64] if client else None)
        if tracing.enabled():
            await self._traced(scope, receive, send, cid, traceparent)
            return
        await self._call(scope, receive, send, cid)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, cid: str, traceparent: str | None) -> None:
        """The request as a server span, continuing the caller's trace; named by its route once matched."""
        method = scope["method"]
        with tracing.span(
            method,
            kind=tracing.SpanKind.SERVER,
            parent=traceparent,
            attributes={"http.request.method": method, "url.path": scope["path"], "pb.correlation_id": cid},
        ) as current:
            status = await self._call(scope, receive, send, cid)
            if current is not None:
                route = _route_template(scope)
                current.update_name(f"{method} {route}")
                current.set_attribute("http.route", route)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    tracing.mark_error(current, f"HTTP {status}")

    async def _call(self, scope: Scope, receive: Receive, send: Send, cid: str) -> int:
        start = time.perf_counter()
        status = 500

        async def send_with_correlation(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = cid
            await send(message)

        try:
            await self.app(scope, receive, send_with_correlation)
        finally:
            route = _route_template(scope)
            method = scope["method"]
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
        return status
