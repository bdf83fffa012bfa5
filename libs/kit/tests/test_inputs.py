"""The shared input boundaries (issue 14): cursors, text, integers, moments and coordinates that
PostgreSQL cannot take are refused as 4xx before they reach it."""

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel

from kit.errors import install_error_handlers
from kit.inputs import INT64_MAX, InputGuardMiddleware, Latitude, UtcDatetime
from kit.pagination import InvalidCursor, decode_cursor, encode_cursor


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_cursor_round_trip_is_in_utc() -> None:
    ident = uuid.uuid4()
    at = datetime(2026, 12, 5, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    assert decode_cursor(encode_cursor(at, ident)) == (at, ident)
    assert decode_cursor(encode_cursor(at, ident))[0].tzinfo == UTC


@pytest.mark.parametrize(
    "raw",
    [
        f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}",
        f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}",
        f"2026-01-01T00:00:00|{uuid.uuid4()}",
        "2026-01-01T00:00:00+00:00|not-a-uuid",
        "\x00|\x00",
    ],
)
def test_cursor_outside_the_calendar_or_garbage_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(_cursor(raw))
    with pytest.raises(InvalidCursor):
        decode_cursor("!!" + _cursor(raw))


class Body(BaseModel):
    text: str
    at: UtcDatetime | None = None
    lat: Latitude | None = None


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(InputGuardMiddleware)
    install_error_handlers(app)

    @app.get("/items/{name}")
    async def item(name: str, before: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None) -> dict[str, Any]:
        return {"name": name, "before": before}

    @app.post("/items")
    async def create(body: Body) -> dict[str, Any]:
        return body.model_dump(mode="json")

    return app


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        yield client


async def test_ordinary_requests_pass_with_their_body(http: httpx.AsyncClient) -> None:
    assert (await http.get("/items/a", params={"before": INT64_MAX})).json() == {"name": "a", "before": INT64_MAX}
    body = {"text": "line\none\ttab", "at": "2026-12-05T08:00:00+08:00", "lat": 31.2}
    answer = (await http.post("/items", json=body)).json()
    assert answer == {"text": "line\none\ttab", "at": "2026-12-05T00:00:00Z", "lat": 31.2}


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "where"),
    [
        ("GET", "/items/a%00b", {}, "path"),
        ("GET", "/items/a", {"params": {"q": "x\x00"}}, "query"),
        ("POST", "/items", {"json": {"text": "a\x00b"}}, "body"),
        ("POST", "/items", {"content": '{"text": "\\ud800"}', "headers": {"content-type": "application/json"}}, "body"),
        ("POST", "/items", {"data": {"text": "a\x00"}}, "body"),
    ],
)
async def test_unstorable_text_is_a_422_wherever_it_is(
    http: httpx.AsyncClient, method: str, url: str, kwargs: dict[str, Any], where: str
) -> None:
    response = await http.request(method, url, **kwargs)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["loc"][0] == where
    assert problem["errors"][0]["type"] == "string_unstorable_character"


async def test_integers_moments_and_coordinates_out_of_range_are_422(http: httpx.AsyncClient) -> None:
    assert (await http.get("/items/a", params={"before": INT64_MAX + 1})).status_code == 422
    for at in ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-12-05T08:00:00"]:
        assert (await http.post("/items", json={"text": "t", "at": at})).status_code == 422, at
    assert (await http.post("/items", json={"text": "t", "lat": 5e-324})).json()["lat"] == 0.0
