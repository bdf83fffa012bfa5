"""Typed business errors, rendered as RFC 9457 `application/problem+json` with a stable `code`."""

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kit.correlation import get_correlation_id

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class BusinessError(Exception):
    """Subclass per business rule: set `status` and `code`; pass a human `detail` and extras."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(BusinessError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(BusinessError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthorized(BusinessError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(BusinessError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class TooManyRequests(BusinessError):
    """429 with `Retry-After` (whole seconds, at least 1): a limit the caller may retry after."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after_s: float, **extra: Any) -> None:
        seconds = max(1, int(-(-retry_after_s // 1)))
        super().__init__(detail, retry_after_s=seconds, **extra)
        self.headers = {"Retry-After": str(seconds)}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:pb:error:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if (cid := get_correlation_id()) is not None:
        body["correlation_id"] = cid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    async def on_business(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BusinessError)
        return problem(exc.status, exc.code, exc.title, exc.detail, exc.headers or None, **exc.extra)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return problem(422, "validation_error", "Invalid request", "The request did not validate", errors=errors)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        extra = getattr(exc, "problem_extra", {})  # e.g. kit.bodylimit's max_bytes
        return problem(
            exc.status_code, code, str(exc.detail), str(exc.detail), dict(exc.headers or {}) or None, **extra
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "Internal error", "An unexpected error occurred; it has been logged")

    app.add_exception_handler(BusinessError, on_business)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
