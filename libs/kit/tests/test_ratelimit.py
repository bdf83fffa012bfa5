"""Request rate limits (kit.ratelimit, issue 15): counters shared through the database, Retry-After that is
exactly when a request passes again, refusals answered from memory, fail-open, trusted proxies."""

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kit.addresses import client_address, parse_networks
from kit.errors import TooManyRequests
from kit.ratelimit import CREATE_INDEX, CREATE_TABLE, Limit, RateLimiter, retry_after
from kit.testing import kit_database

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_ratelimit", CREATE_TABLE, CREATE_INDEX) as engine:
        yield engine


@pytest.fixture(autouse=True)
async def empty(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE rate_limit_counters"))


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def limiter(engine: AsyncEngine, clock: Clock, limit: str = "3/60") -> RateLimiter:
    return RateLimiter(engine, {"default": Limit.parse(limit), "login": Limit.parse("2/10")}, clock=clock)


async def test_two_limiters_sharing_a_database_count_together(engine: AsyncEngine) -> None:
    clock = Clock(6000.0)
    a, b = limiter(engine, clock), limiter(engine, clock)
    await a.check("default", "user:1")
    await b.check("default", "user:1")
    await a.check("default", "user:1")
    with pytest.raises(TooManyRequests):
        await b.check("default", "user:1")  # the fourth of the window, counted on another replica
    await b.check("default", "user:2")  # another subject has its own count
    await b.check("login", "user:1")  # and another class


async def test_retry_after_is_when_a_request_passes_again_and_refusals_come_from_memory(engine: AsyncEngine) -> None:
    clock = Clock(6000.0)  # a window starts
    one = limiter(engine, clock)
    for _ in range(3):
        await one.check("default", "addr:10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        await one.check("default", "addr:10.0.0.1")
    # 4 counted in [6000, 6060): a request passes once 4 x (share of it still sliding) + 1 <= 3, at 6090.
    assert refused.value.headers["Retry-After"] == "90"
    assert refused.value.status == 429 and refused.value.code == "rate_limited"

    clock.now = 6089.5
    with statements(engine) as seen:
        for _ in range(50):
            with pytest.raises(TooManyRequests) as again:
                await one.check("default", "addr:10.0.0.1")
    assert seen == []  # answered from memory, no round trip
    assert again.value.headers["Retry-After"] == "1"

    clock.now = 6090.0
    with statements(engine) as seen:
        await one.check("default", "addr:10.0.0.1")  # 4 x 0.5 + 1 = 3: passes
    assert len(seen) == 1  # one statement: the upsert reads both windows


@pytest.mark.parametrize("seed", range(5))
def test_retry_after_matches_the_sliding_window_rule(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        limit = Limit(rng.randint(1, 50), rng.randint(1, 600))
        previous = rng.randint(0, 3 * limit.count)
        elapsed = rng.uniform(0, limit.window_s - 1e-6)
        current = rng.randint(1, 3 * limit.count)
        if previous * (1 - elapsed / limit.window_s) + current <= limit.count:
            continue  # allowed: no refusal to time
        wait = retry_after(limit, previous=previous, current=current, elapsed=elapsed)
        assert _passes(limit, previous, current, elapsed + wait + 1e-6)
        assert wait < 1e-6 or not _passes(limit, previous, current, elapsed + wait - 1e-3)


def _passes(limit: Limit, previous: int, current: int, at: float) -> bool:
    """Would a request `at` seconds after the refused window's start pass, nothing else arriving meanwhile?"""
    w = limit.window_s
    if at < w:
        return previous * (1 - at / w) + current + 1 <= limit.count + 1e-9
    if at < 2 * w:
        return current * (1 - (at - w) / w) + 1 <= limit.count + 1e-9
    return True


async def test_a_database_error_lets_the_request_through_and_is_counted() -> None:
    async with kit_database("pb_test_kit_ratelimit_missing") as engine:  # no counters table
        before = REGISTRY.get_sample_value("pb_rate_limit_checks_total", {"rate_class": "default", "outcome": "error"})
        open_limiter = limiter(engine, Clock(6000.0), "1/60")
        for _ in range(3):
            await open_limiter.check("default", "user:1")
        after = REGISTRY.get_sample_value("pb_rate_limit_checks_total", {"rate_class": "default", "outcome": "error"})
        assert (after or 0) - (before or 0) == 3


async def test_cleanup_deletes_windows_no_check_reads(engine: AsyncEngine) -> None:
    clock = Clock(6000.0)
    one = limiter(engine, clock)
    await one.check("default", "user:old")
    clock.now = 6125.0  # two windows later: 6000's window is no longer anyone's previous one
    await one.check("default", "user:new")
    await one.cleanup()
    async with engine.connect() as conn:
        keys = (await conn.execute(text("SELECT key FROM rate_limit_counters"))).scalars().all()
    assert keys == ["default|user:new"]


def test_limits_parse_and_scale() -> None:
    assert Limit.parse("10/60").scaled(100) == Limit(1000, 60)
    assert Limit.parse("3 / 1s").scaled(0.1) == Limit(1, 1)
    for bad in ("10", "0/60", "10/0", "ten/60", "-1/60"):
        with pytest.raises(ValueError):
            Limit.parse(bad)


TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's header is its own words
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),  # through the proxy
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a spoofed hop left of the real one
        ("10.0.0.2", "198.51.100.1, 10.0.0.7", "198.51.100.1"),  # two proxies
        ("10.0.0.2", "not-an-address", "10.0.0.2"),  # malformed: the proxy is all we know
        ("10.0.0.2", None, "10.0.0.2"),
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        (None, "198.51.100.1", "unknown"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str | None, forwarded: str | None, expected: str
) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"
