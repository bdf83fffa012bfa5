"""Request rate limits through the real app (kit.ratelimit, issue 15): a login flood from one address is
refused with 429 and Retry-After, answered from memory after the first refusal, while the same address's
other routes and other addresses' logins go on."""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from kit.correlation import get_correlation_id
from kit.testing import truncate_all
from user_svc.main import create_app
from user_svc.settings import Settings

FLOODER = ("198.51.100.7", 40000)
NEIGHBOUR = ("198.51.100.8", 40000)


@asynccontextmanager
async def clients(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, AsyncEngine]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        flooder = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=FLOODER), base_url="http://test")
        neighbour = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=NEIGHBOUR), base_url="http://test")
        async with flooder, neighbour:
            yield flooder, neighbour, app.state.runtime.engine


@contextmanager
def statements_of(engine: AsyncEngine, correlation_prefix: str) -> Iterator[list[str]]:
    """Statements run on the service's database on behalf of requests whose correlation id has the prefix
    (the service's own background work, an outbox poll, is someone else's)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (get_correlation_id() or "").startswith(correlation_prefix):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_login_flood_is_refused_from_memory_and_leaves_the_rest_working(
    settings: Settings, database_url: str
) -> None:
    limited = settings.model_copy(update={"rate_limit_scale": 1.0, "rate_limit_login": "3/60"})
    await truncate_all(database_url)
    async with clients(limited) as (flooder, neighbour, engine):

        async def guess(client: httpx.AsyncClient, n: int) -> httpx.Response:
            body = {"login": f"+86138000{n:05d}", "password": "guess-1234"}
            return await client.post("/v1/sessions", json=body, headers={"X-Correlation-ID": f"flood-{n}"})

        for n in range(3):
            assert (await guess(flooder, n)).json()["code"] == "invalid_credentials"
        refused = await guess(flooder, 3)
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert refused.json()["retry_after_s"] == int(refused.headers["Retry-After"])

        with statements_of(engine, "flood-") as seen:
            answers = [await guess(flooder, n) for n in range(4, 54)]
        assert {a.status_code for a in answers} == {429}
        assert all(1 <= int(a.headers["Retry-After"]) <= int(refused.headers["Retry-After"]) for a in answers)
        assert seen == []  # 50 refusals, not one database round trip

        # The same address's other routes count in their own class; another address logs in as usual.
        assert (await flooder.get("/v1/terms")).status_code == 200
        assert (await flooder.post("/v1/admin/sessions", json={"login": "x", "password": "y"})).status_code == 429
        with statements_of(engine, "flood-") as seen_for_neighbour:
            assert (await guess(neighbour, 99)).json()["code"] == "invalid_credentials"
        assert any("rate_limit_counters" in s for s in seen_for_neighbour)  # the probe sees a counted request
