"""Test helpers shared by every service's integration tests (real PostgreSQL and Kafka)."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import Envelope, event_adapter, new_event
from contracts.events import EventData


async def ensure_database(url: str, *, recreate: bool = False) -> None:
    """Create the database named in `url` (dropping it first when `recreate`)."""
    parsed = make_url(url)
    name = parsed.database
    assert name, "the database url names no database"
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and recreate:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def migrate(service_dir: Path, database_url: str) -> None:
    """`alembic upgrade head` for one service, in a subprocess so env.py runs as in production."""
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(service_dir / "alembic.ini"), "upgrade", "head"],
        cwd=service_dir,
        env=env,
        check=True,
        capture_output=True,
    )


async def truncate_all(database_url: str, attempts: int = 5) -> None:
    """Empty every table but Alembic's, so each test starts from a clean database. The service under test may
    still be writing (its consumers, periodic jobs, the last test's messages) while TRUNCATE takes every table's
    exclusive lock, and PostgreSQL may pick the TRUNCATE as a deadlock victim: then it is tried again."""
    from sqlalchemy.exc import DBAPIError

    engine = create_async_engine(database_url)
    try:
        for attempt in range(1, attempts + 1):
            try:
                async with engine.begin() as conn:
                    names = (
                        await conn.execute(
                            text(
                                "SELECT tablename FROM pg_tables "
                                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                            )
                        )
                    ).scalars()
                    quoted = ", ".join(f'"{n}"' for n in names)
                    if quoted:
                        await conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
                return
            except DBAPIError as exc:
                if "deadlock" not in str(exc) or attempt == attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)  # back off: the other transaction finishes meanwhile
    finally:
        await engine.dispose()


@asynccontextmanager
async def app_client(app: FastAPI, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (real database, Kafka, MQTT) and talk to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def write_keypair(directory: Path) -> tuple[Path, Path]:
    """An Ed25519 keypair for signing test tokens: (private, public) PEM paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / "jwt-private.pem"
    public = directory / "jwt-public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_database_url(service: str) -> str:
    """The test stack's database for `service` (e.g. `billing`), overridable by `<SERVICE>_DATABASE_URL`."""
    var = f"{service.upper()}_DATABASE_URL"
    return os.environ.get(var) or f"postgresql+asyncpg://postgres@127.0.0.1:5432/pb_test_{service}"


async def migrated_database(service: str, service_dir: Path) -> str:
    """A fresh test-stack database for `service` (see `test_database_url`), migrated to head; its URL."""
    url = test_database_url(service)
    await ensure_database(url, recreate=True)
    migrate(service_dir, url)
    return url


@asynccontextmanager
async def kit_database(database: str, *ddl: str) -> AsyncIterator[AsyncEngine]:
    """A new database `database` on the kit's test server with the kit's own tables (outbox, processed events)
    and any `ddl` a test adds (its effects table), for tests of the kit itself; dropped and made again each time."""
    from kit.db import define_kit_tables, make_engine, make_metadata

    url = make_url(test_database_url("kit")).set(database=database).render_as_string(False)
    await ensure_database(url, recreate=True)
    engine = make_engine(url)
    metadata = make_metadata()
    define_kit_tables(metadata)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for statement in ddl:
                await conn.execute(text(statement))
        yield engine
    finally:
        await engine.dispose()


def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19093")


async def move_group_to_end(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit the end offsets for `group`, so a service under test sees only events produced from now on
    (a shared broker may hold older events of other tests)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        if partitions:
            ends = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


async def fresh_consumer_group(prefix: str, lanes: Mapping[str, Iterable[str]]) -> str:
    """A new consumer group `<prefix>-<random>` for an app under test. The kit names each consumer's group
    `<group>.<spec name>`: every lane in `lanes` (spec name -> its topics) is moved to the end first, so the
    app sees only what is produced from now on (the test stack's broker is shared by the suites)."""
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    for spec, topics in lanes.items():
        await move_group_to_end(kafka_bootstrap(), f"{group}.{spec}", [str(t) for t in topics])
    return group


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a polling budget, not a cancellation scope
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def serve_app(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto", timeout_s: float = 30.0
) -> AsyncIterator[str]:
    """An ASGI app on a real port of 127.0.0.1 (lifespan and all unless `lifespan="off"`), for what must be
    reached over HTTP: a service a command line talks to, a stand-in for another service or a gateway.
    Yields its base URL; stops it (and waits, bounded) on exit."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        assert not task.done(), "the app stopped before it served"
        return bool(server.started)

    try:
        await eventually(started, timeout=timeout_s, interval=0.01, what="the app serving")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout_s)
        sock.close()


class EventBus:
    """Produces contract envelopes to the real broker, playing the other services' part in a test."""

    def __init__(self, producer: AIOKafkaProducer, producer_name: str) -> None:
        self._producer = producer
        self._name = producer_name

    def envelope(self, data: EventData, key: str) -> Envelope:
        return new_event(data, key=key, producer=self._name)

    async def send(self, envelope: Envelope) -> None:
        await self._producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())

    async def publish(self, data: EventData, key: str) -> Envelope:
        envelope = self.envelope(data, key)
        await self.send(envelope)
        return envelope


class EventRecorder:
    """Reads topics from their end (no consumer group) and keeps every envelope, so a test can wait for
    the events a service under test published: `await recorder.wait_for(lambda e: ...)`."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self.seen: list[Envelope] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await consumer.start()
        partitions = [
            TopicPartition(t, p) for t in self._topics for p in sorted(consumer.partitions_for_topic(t) or [])
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # resolve the end now: events from here on are seen
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            if record.value is not None:
                self.seen.append(event_adapter.validate_json(record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for(
        self,
        match: Callable[[Envelope], bool],
        *,
        timeout: float = 15.0,  # noqa: ASYNC109 - a polling budget, not a cancellation scope
        what: str = "event",
    ) -> Envelope:
        async def found() -> Envelope | None:
            return next((e for e in self.seen if match(e)), None)

        result: Envelope = await eventually(found, timeout=timeout, what=what)
        return result


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test to collect


async def staff_actions(database: AsyncEngine | str, action: str) -> list[Any]:
    """The audit trail events (`audit.staff_action.recorded`, kit.audit) a service wrote to its outbox for
    `action`, oldest first: what its staff routes recorded in their own transactions."""
    engine = create_async_engine(database) if isinstance(database, str) else database
    try:
        async with engine.connect() as conn:
            query = text("SELECT payload FROM outbox WHERE topic = 'audit.staff.v1' ORDER BY id")
            rows = (await conn.execute(query)).all()
    finally:
        if isinstance(database, str):
            await engine.dispose()
    found = [event_adapter.validate_json(payload).data for (payload,) in rows]
    return [data for data in found if getattr(data, "action", None) == action]
