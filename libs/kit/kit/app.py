"""The service app factory: one lifespan builds every client; nothing connects at import time."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import EventData
from kit.auth import TokenVerifier
from kit.correlation import HEADER, get_correlation_id
from kit.db import make_engine, make_sessionmaker, ping
from kit.errors import install_error_handlers
from kit.health import ObservabilityMiddleware, ReadinessCheck
from kit.health import router as health_router
from kit.kafka import EventConsumer, FetchPacing, Handler, LatencyClass, make_producer, start_with_retry
from kit.logging import configure_logging
from kit.outbox import OutboxRelay, OutboxWakeup, add_event, add_events
from kit.revocation import RevocationList, RevocationListener
from kit.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a running service holds; built in the lifespan, at `app.state.runtime`."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    producer: AIOKafkaProducer
    outbox_wakeup: OutboxWakeup
    http: httpx.AsyncClient
    verifier: TokenVerifier | None
    revocations: RevocationList = field(default_factory=RevocationList)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    tasks: list["asyncio.Task[Any]"] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    async def publish(self, session: AsyncSession, data: EventData, *, key: str) -> Envelope:
        """Write an event to the outbox in `session`'s transaction; it is sent once that commits."""
        return await add_event(session, data, key=key, producer=self.settings.service_name, wakeup=self.outbox_wakeup)

    async def publish_many(
        self, session: AsyncSession, events: Sequence[tuple[EventData, str, str | None]]
    ) -> list[Envelope]:
        """Many events (`(data, key, correlation id or None)`) in one outbox insert, same transaction."""
        return await add_events(session, events, producer=self.settings.service_name, wakeup=self.outbox_wakeup)

    def spawn(self, coro: Any, name: str) -> "asyncio.Task[Any]":
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_task_end)
        self.tasks.append(task)
        return task


def _log_task_end(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s died", task.get_name(), exc_info=exc)


async def _propagate_correlation(request: httpx.Request) -> None:
    if (cid := get_correlation_id()) is not None and HEADER not in request.headers:
        request.headers[HEADER] = cid


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

ExtraLifespan = Callable[[Runtime], AbstractAsyncContextManager[None]]


@dataclass
class ConsumerSpec:
    topics: Sequence[str]
    handlers: Mapping[str, Handler]
    name: str = "events"
    latency: LatencyClass = LatencyClass.BACKGROUND


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    consumers: Callable[[Runtime], Sequence[ConsumerSpec]] | None = None,
    extra_lifespan: ExtraLifespan | None = None,
) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, settings.db_pool_size)
        producer = make_producer(settings.kafka_bootstrap, settings.service_name)
        await start_with_retry(producer, "producer")
        revocations = RevocationList()
        verifier = None
        if settings.jwt_public_key_file is not None:
            verifier = TokenVerifier.from_file(
                settings.jwt_public_key_file, settings.jwt_issuer, settings.jwt_audience, revocations
            )
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            producer=producer,
            outbox_wakeup=OutboxWakeup(),
            http=httpx.AsyncClient(timeout=5.0, event_hooks={"request": [_propagate_correlation]}),
            verifier=verifier,
            revocations=revocations,
        )
        app.state.runtime = runtime
        relay = OutboxRelay(runtime.sessionmaker, producer, runtime.outbox_wakeup, settings.outbox_poll_interval_s)
        runtime.readiness_checks["database"] = lambda: ping(engine)
        runtime.readiness_checks["kafka"] = lambda: _kafka_ready(producer, relay)
        runtime.spawn(relay.run(), "outbox-relay")
        try:
            if settings.token_revocation_listener:
                await _listen_for_revocations(runtime)
            async with AsyncExitStack() as stack:
                if extra_lifespan is not None:
                    await stack.enter_async_context(extra_lifespan(runtime))
                specs = consumers(runtime) if consumers is not None else []
                event_consumers = [
                    EventConsumer(
                        name=spec.name,
                        bootstrap=settings.kafka_bootstrap,
                        group_id=f"{settings.consumer_group}.{spec.name}",
                        topics=spec.topics,
                        handlers=spec.handlers,
                        sessionmaker=runtime.sessionmaker,
                        session_timeout_ms=settings.kafka_session_timeout_ms,
                        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
                        pacing=FetchPacing.for_class(settings, spec.latency),
                    )
                    for spec in specs
                ]
                for consumer in event_consumers:
                    runtime.spawn(consumer.run(), f"consumer-{consumer.name}")
                if event_consumers:
                    runtime.readiness_checks["consumers"] = lambda: _consumers_ready(event_consumers)
                try:
                    yield
                finally:
                    await _cancel_all(runtime.tasks)
        finally:
            await _cancel_all(runtime.tasks)
            await producer.stop()
            await runtime.http.aclose()
            await engine.dispose()

    app = FastAPI(title=title, lifespan=lifespan)
    app.add_middleware(ObservabilityMiddleware)
    install_error_handlers(app)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    return app


async def _listen_for_revocations(runtime: Runtime) -> None:
    """Every process reads the revocations itself; serve only once those before the start are known
    (or after the timeout, not ready until then)."""
    settings = runtime.settings
    listener = RevocationListener(
        runtime.revocations,
        bootstrap=settings.kafka_bootstrap,
        client_id=settings.service_name,
        lookback_s=settings.token_revocation_lookback_s,
        pacing=FetchPacing.for_class(settings, LatencyClass.BACKGROUND),
    )
    task = runtime.spawn(listener.run(), "revocation-listener")
    try:
        await asyncio.wait_for(listener.caught_up.wait(), settings.token_revocation_startup_timeout_s)
    except TimeoutError:
        log.warning("revocations not caught up at startup; serving, not ready until they are")

    async def caught_up() -> None:
        if task.done() or not listener.caught_up.is_set():
            raise RuntimeError("revocations not caught up" if not task.done() else "revocation listener stopped")

    runtime.readiness_checks["revocations"] = caught_up


async def _kafka_ready(producer: AIOKafkaProducer, relay: OutboxRelay) -> None:
    if not await producer.client.force_metadata_update():
        raise RuntimeError("kafka metadata request failed")
    if relay.last_error is not None:
        raise RuntimeError(f"outbox relay: {relay.last_error}")


async def _cancel_all(tasks: list["asyncio.Task[Any]"]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _consumers_ready(consumers: Sequence[EventConsumer]) -> None:
    waiting = [c.name for c in consumers if not c.ready]
    if waiting:
        raise RuntimeError(f"consumers not running: {waiting}")
