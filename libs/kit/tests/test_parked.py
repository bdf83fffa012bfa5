"""Parked events (issue 14): an event whose handler fails every attempt is kept with its error and
envelope; staff list it per service and replay it after the fix, once. Runs a real kit app (create_service_app:
its consumers on the real broker, its database, its admin API)."""

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts import Envelope, Topic
from contracts.events import UserBlocked
from kit.app import ConsumerSpec, LatencyClass, create_service_app
from kit.auth import TokenSigner
from kit.kafka import make_producer
from kit.parked_cli import run as parked_command
from kit.settings import ServiceSettings
from kit.testing import (
    EventBus,
    eventually,
    kafka_bootstrap,
    kit_database,
    move_group_to_end,
    serve_app,
    write_keypair,
)

pytestmark = pytest.mark.integration

SERVICE = f"kit-parked-{uuid.uuid4().hex[:6]}"
GROUP = f"{SERVICE}.events"


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database(
        "pb_test_kit_parked", "CREATE TABLE blocked (user_id uuid PRIMARY KEY, reason text)"
    ) as engine:
        yield engine


class Blocker:
    """A handler that fails until `fixed` (the bug an operator deploys a fix for)."""

    def __init__(self) -> None:
        self.fixed = False
        self.calls = 0

    async def __call__(self, session: AsyncSession, envelope: Envelope) -> None:
        self.calls += 1
        if not self.fixed:
            raise RuntimeError("the projection cannot take this yet")
        data = envelope.data
        assert isinstance(data, UserBlocked)
        await session.execute(
            text("INSERT INTO blocked (user_id, reason) VALUES (:u, :r)"), {"u": data.user_id, "r": data.reason}
        )


async def test_a_parked_event_is_listed_and_replayed_once_after_the_fix(engine: AsyncEngine, tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path)
    settings = ServiceSettings(
        service_name=SERVICE,
        pb_env="test",
        database_url=engine.url.render_as_string(hide_password=False),
        kafka_bootstrap=kafka_bootstrap(),
        jwt_public_key_file=public,
        token_revocation_listener=False,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=1000,
    )
    blocker = Blocker()
    app = create_service_app(
        settings,
        title=SERVICE,
        routers=[],
        consumers=lambda _: [
            ConsumerSpec(
                topics=[Topic.USERS.value],
                handlers={"user.user.blocked": blocker},
                latency=LatencyClass.CRITICAL,
            )
        ],
    )
    signer = TokenSigner.from_file(private, settings.jwt_issuer, settings.jwt_audience)
    operator = {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()), kind='admin', roles=['operator'])}"}
    analyst = {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()), kind='admin', roles=['analyst'])}"}
    await move_group_to_end(kafka_bootstrap(), GROUP, [Topic.USERS.value])

    producer = make_producer(kafka_bootstrap(), "kit-parked-test")
    await producer.start()
    user_id = uuid.uuid4()
    try:
        async with served(app) as http:
            await eventually(lambda: _ready(http), timeout=30, what="the consumer")
            bus = EventBus(producer, "user-svc")
            sent = await bus.publish(UserBlocked(user_id=user_id, reason="fraud", at=datetime.now(UTC)), str(user_id))

            async def parked() -> list[dict[str, Any]]:
                body = (await http.get("/v1/admin/parked-events", headers=operator)).json()
                return [i for i in body["items"] if i["event_id"] == str(sent.event_id)]

            [item] = await eventually(parked, timeout=30, what="the event parked")
            assert item["consumer"] == GROUP and item["event_type"] == "user.user.blocked"
            assert "cannot take this yet" in item["error"] and item["replayable"] is True
            assert blocker.calls == 5  # every attempt, then parked; the consumer went on
            assert (await http.get("/v1/admin/parked-events", headers=analyst)).status_code == 403

            replay_url = f"/v1/admin/parked-events/{GROUP}/{sent.event_id}/replay"
            still_broken = await http.post(replay_url, headers=operator)
            assert still_broken.status_code == 200, still_broken.text
            assert still_broken.json()["outcome"] == "failed" and "cannot take" in still_broken.json()["error"]
            assert len(await parked()) == 1  # still parked

            # The operator's command, on every service named by a *_SVC_URL (here the one).
            env = {"KIT_SVC_URL": str(http.base_url), "PB_ADMIN_TOKEN": operator["Authorization"].split()[1]}
            listing = io.StringIO()
            assert await asyncio.to_thread(parked_command, ["list"], env, listing) == 0
            assert "kit: 1 parked" in listing.getvalue() and str(sent.event_id) in listing.getvalue()
            assert await asyncio.to_thread(parked_command, ["replay"], env, io.StringIO()) == 1  # failed again

            blocker.fixed = True  # the fix is deployed
            replayed = io.StringIO()
            assert await asyncio.to_thread(parked_command, ["replay", "--service", "kit"], env, replayed) == 0
            assert f"{GROUP}  {sent.event_id}  done" in replayed.getvalue()
            assert await parked() == []
            assert (await http.post("/v1/admin/parked-events/replay", headers=operator)).json() == []
            again = await http.post(replay_url, headers=operator)
            assert again.status_code == 404 and again.json()["code"] == "parked_event_not_found"
            unknown = await http.post(f"/v1/admin/parked-events/nobody/{sent.event_id}/replay", headers=operator)
            assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_consumer"

            # A redelivery of the same event is now a duplicate: applied exactly once.
            await bus.send(sent)
            await bus.publish(UserBlocked(user_id=uuid.uuid4(), reason="later", at=datetime.now(UTC)), "k")

            async def two_rows() -> bool:
                async with engine.connect() as conn:
                    return (await conn.execute(text("SELECT count(*) FROM blocked"))).scalar_one() == 2

            await eventually(two_rows, what="the next event applied")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT user_id, reason FROM blocked WHERE reason = 'fraud'"))).all()
            status = (
                await conn.execute(
                    text("SELECT status, error, payload FROM processed_events WHERE event_id = :e"),
                    {"e": sent.event_id},
                )
            ).one()
        assert rows == [(user_id, "fraud")]
        assert (status.status, status.error, status.payload) == ("done", None, None)
    finally:
        await producer.stop()


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real port (lifespan and all), so the command can reach it over HTTP."""
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        yield http


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200
