"""`/livez`, `/readyz` and `/metrics` for operations."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.routing import Match

from kit.correlation import HEADER, new_correlation_id, set_correlation_id

ReadinessCheck = Callable[[], Awaitable[None]]

HTTP_REQUESTS = Counter("pb_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "pb_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

router = APIRouter(tags=["operations"])


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


def _route_template(request: Request) -> str:
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


class ObservabilityMiddleware(BaseHTTPMiddleware):
    """Sets the correlation id for the request (from `X-Correlation-ID` or new) and records metrics."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        incoming = request.headers.get(HEADER, "")
        cid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else new_correlation_id()
        set_correlation_id(cid)
        start = time.perf_counter()
        response = await call_next(request)
        route = _route_template(request)
        HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - start)
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        response.headers[HEADER] = cid
        return response
