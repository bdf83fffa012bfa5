"""Instant revocation: an event on user.sessions.v1 reaches every process of every service (no consumer
group), including one that starts after it; against the real broker and PostgreSQL."""

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI

from contracts.events import SessionRevoked
from kit.app import create_service_app
from kit.auth import CurrentUser, TokenSigner
from kit.db import define_kit_tables, make_engine, make_metadata
from kit.kafka import make_producer
from kit.revocation import RevocationList
from kit.settings import ServiceSettings
from kit.testing import (
    EventBus,
    app_client,
    ensure_database,
    eventually,
    kafka_bootstrap,
    test_database_url,
    write_keypair,
)

pytestmark = pytest.mark.integration

ISSUER, AUDIENCE = "pb-user-svc", "pb"


@pytest.fixture(scope="module")
async def database_url() -> str:
    url = test_database_url("kit_revocation")
    await ensure_database(url, recreate=True)
    metadata = make_metadata()
    define_kit_tables(metadata)  # the outbox relay every app runs polls its table
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    return url


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keypair(tmp_path_factory.mktemp("revocation-keys"))


def _app(name: str, database_url: str, public_key: Path) -> FastAPI:
    router = APIRouter()

    @router.get("/v1/whoami")
    async def whoami(user: CurrentUser) -> dict[str, str]:
        return {"user": user.subject}

    settings = ServiceSettings(
        service_name=name,
        pb_env="test",
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap(),
        jwt_public_key_file=public_key,
        outbox_poll_interval_s=0.2,
    )
    return create_service_app(settings, title=name, routers=[router])


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    producer = make_producer(kafka_bootstrap(), "kit-revocation-test")
    await producer.start()
    try:
        yield EventBus(producer, "user-svc")
    finally:
        await producer.stop()


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def _status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})).status_code


async def test_a_revocation_reaches_every_replica_and_one_started_later(
    database_url: str, keys: tuple[Path, Path], bus: EventBus
) -> None:
    private, public = keys
    signer = TokenSigner.from_file(private, ISSUER, AUDIENCE, ttl_s=300)
    user = str(uuid4())
    revoked, kept = signer.issue(user), signer.issue(user)

    async with AsyncExitStack() as stack:
        # two replicas of one service (same service name, so one consumer group would split events)
        first = await stack.enter_async_context(app_client(_app("kit-rev-svc", database_url, public)))
        second = await stack.enter_async_context(app_client(_app("kit-rev-svc", database_url, public)))
        for client in (first, second):
            assert await _status(client, revoked) == 200
            assert (await client.get("/readyz")).status_code == 200

        now = datetime.now(UTC)
        await bus.publish(
            SessionRevoked(
                user_id=user,
                token_ids=[_jti(revoked)],
                expires_at=now + timedelta(seconds=360),
                reason="logout",
                at=now,
            ),
            key=user,
        )
        started = time.monotonic()
        for client in (first, second):

            async def refused(c: httpx.AsyncClient = client) -> bool:
                return await _status(c, revoked) == 401

            await eventually(refused, timeout=10, interval=0.02, what="the revoked token to be refused")
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"refused only after {elapsed:.1f} s"
        refusal = await first.get("/v1/whoami", headers={"Authorization": f"Bearer {revoked}"})
        assert refusal.json()["code"] == "token_revoked"
        assert await _status(first, kept) == 200 and await _status(second, kept) == 200

        # a replica (of another service) that starts after the revocation refuses the token from its first request
        late = await stack.enter_async_context(app_client(_app("kit-rev-late-svc", database_url, public)))
        assert await _status(late, revoked) == 401
        assert await _status(late, kept) == 200


async def test_a_revocation_the_lookback_does_not_reach_is_not_loaded(
    database_url: str, keys: tuple[Path, Path], bus: EventBus
) -> None:
    """Entries leave with their tokens: an event whose tokens have expired puts nothing on the list."""
    private, public = keys
    signer = TokenSigner.from_file(private, ISSUER, AUDIENCE, ttl_s=300)
    user = str(uuid4())
    token = signer.issue(user)
    now = datetime.now(UTC)
    await bus.publish(
        SessionRevoked(
            user_id=user, token_ids=[_jti(token)], expires_at=now - timedelta(seconds=1), reason="logout", at=now
        ),
        key=user,
    )
    async with app_client(_app("kit-rev-expired-svc", database_url, public)) as client:
        assert await _status(client, token) == 200


def test_revocation_list_forgets_expired_entries() -> None:
    revocations = RevocationList()
    now = datetime.now(UTC)
    revocations.add(["gone"], now - timedelta(seconds=1))
    revocations.add(["live"], now + timedelta(minutes=5))
    revocations.add(["soon"], now + timedelta(milliseconds=50))
    assert not revocations.is_revoked("gone")
    assert revocations.is_revoked("live") and revocations.is_revoked("soon")
    time.sleep(0.06)
    assert not revocations.is_revoked("soon") and revocations.is_revoked("live")
    assert not revocations.is_revoked("never-revoked")
