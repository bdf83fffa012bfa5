"""Input boundaries every service shares, so a value PostgreSQL cannot take never reaches it as a 500.

- Text: PostgreSQL's `text` holds no NUL character and UTF-8 holds no lone surrogate. `InputGuardMiddleware`
  refuses both in the path, the query string and JSON or form bodies with the usual 422 `validation_error`,
  for every route at once (a borrow code, a search term, a ticket's text...).
- Integers: `BIGINT` is 64-bit; a query or body integer that is stored or compared as one is declared with
  `le=INT64_MAX` (e.g. `Query(ge=1, le=INT64_MAX)`), so 2**63 is a 422, not an overflow in the driver.
- Coordinates: `Latitude` and `Longitude` (no subnormal float reaches PostgreSQL's arithmetic).
- Moments: a request's moment is a `UtcDatetime` (year 1 at +14:00 does not exist in UTC: a 422); a cursor
  is decoded by `kit.pagination`.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import AfterValidator, AwareDatetime, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.errors import problem

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

_FORM_TYPES = ("application/x-www-form-urlencoded",)


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored as PostgreSQL text, or None when it can."""
    if "\x00" in text:
        return "NUL characters are not allowed"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogate characters are not allowed"
    return None


def aware_utc(moment: datetime) -> datetime:
    """`moment` in UTC; ValueError when it is naive or its offset moves it outside years 1 to 9999."""
    if moment.tzinfo is None:
        raise ValueError("a time without an offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("a time outside years 1 to 9999 in UTC") from None


# A moment from a request: with an offset, and one that exists in UTC (what PostgreSQL compares).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(aware_utc)]


def _to_centimetres(degrees: float) -> float:
    return round(degrees, 7)


# Coordinates in degrees, rounded to 1e-7 (about a centimetre): PostgreSQL's float arithmetic fails with
# "underflow" on the subnormal numbers (5e-324) a client may send.
Latitude = Annotated[float, Field(ge=-90, le=90), AfterValidator(_to_centimetres)]
Longitude = Annotated[float, Field(ge=-180, le=180), AfterValidator(_to_centimetres)]


def _walk(value: Any, loc: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(value, str):
        if (why := unstorable(value)) is not None:
            yield loc, why
    elif isinstance(value, dict):
        for key, item in value.items():
            if (why := unstorable(key)) is not None:
                yield [*loc, key], why
            yield from _walk(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, [*loc, index])


def _pairs(where: str, pairs: list[tuple[str, str]]) -> Iterator[tuple[list[str | int], str]]:
    for name, value in pairs:
        for text in (name, value):
            if (why := unstorable(text)) is not None:
                yield [where, name], why


class InputGuardMiddleware:
    """Refuses a request carrying text PostgreSQL cannot store (see the module's docstring). A plain
    ASGI middleware: it reads a JSON or form body once and hands the same bytes on to the route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = list(self._in_path_and_query(scope))
        content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        checks_body = content_type == "application/json" or content_type.endswith("+json")
        checks_body = checks_body or content_type in _FORM_TYPES
        if not found and checks_body:
            messages: list[Message] = []
            chunks: list[bytes] = []
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            found = list(self._in_body(content_type, b"".join(chunks)))
            pending = iter(messages)

            async def replay() -> Message:
                return next(pending, None) or await receive()

            receive = replay
        if found:
            errors = [{"loc": loc, "msg": why, "type": "string_unstorable_character"} for loc, why in found[:10]]
            detail = "The request did not validate"
            response = problem(422, "validation_error", "Invalid request", detail, errors=errors)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _in_path_and_query(scope: Scope) -> Iterator[tuple[list[str | int], str]]:
        if (why := unstorable(scope.get("path", ""))) is not None:
            yield ["path"], why
        query = scope.get("query_string", b"").decode("latin-1")
        yield from _pairs("query", parse_qsl(query, keep_blank_values=True))

    @staticmethod
    def _in_body(content_type: str, body: bytes) -> Iterator[tuple[list[str | int], str]]:
        if not body:
            return
        if content_type in _FORM_TYPES:
            yield from _pairs("body", parse_qsl(body.decode("latin-1"), keep_blank_values=True))
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            return  # not JSON: the route's own parsing answers with its 422
        yield from _walk(parsed, ["body"])
