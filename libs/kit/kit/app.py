"""The service app factory: one lifespan builds every client; nothing connects at import time."""

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import httpx
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Envelope, new_event
from contracts.events import EventData
from kit.addresses import Network, parse_networks
from kit.auth import TokenVerifier
from kit.bodylimit import BodyLimitMiddleware
from kit.broker_loss import BrokerLossWatch, PublishedOffsets
from kit.correlation import HEADER, get_correlation_id
from kit.db import make_engine, make_sessionmaker, ping
from kit.errors import install_error_handlers
from kit.health import ObservabilityMiddleware, ReadinessCheck
from kit.health import router as health_router
from kit.httpclient import async_client
from kit.inputs import InputGuardMiddleware
from kit.kafka import (
    BatchHandler,
    EventConsumer,
    FetchPacing,
    Handler,
    LatencyClass,
    make_producer,
    one_transaction_per_fetch,
    start_with_retry,
)
from kit.logging import configure_logging
from kit.outbox import Lane, OutboxRelay, OutboxWakeup, add_event, add_events
from kit.parked import router as parked_router
from kit.periodic import run_periodically
from kit.ratelimit import RateLimiter, enforce_rate_limit
from kit.retention import prune
from kit.revocation import RevocationList, RevocationListener
from kit.settings import ServiceSettings
from kit.tracing import configure_tracing, current_traceparent, inject, kafka_headers, shutdown_tracing
from kit.tracing import enabled as tracing_enabled

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
    # A second producer for bulk events (settings.outbox_split_lanes): its batches never sit in front
    # of a rental's events in the same produce request.
    bulk_producer: AIOKafkaProducer | None = None
    revocations: RevocationList = field(default_factory=RevocationList)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    event_consumers: list[EventConsumer] = field(default_factory=list)  # kit.parked replays through them
    tasks: list["asyncio.Task[Any]"] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    rate_limiter: RateLimiter | None = None  # None: RATE_LIMIT_ENABLED is off
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For is believed (kit.ratelimit)

    async def publish(self, session: AsyncSession, data: EventData, *, key: str) -> Envelope:
        """Write an event to the outbox in `session`'s transaction; it is sent once that commits."""
        return await add_event(session, data, key=key, producer=self.settings.service_name, wakeup=self.outbox_wakeup)

    async def publish_many(
        self, session: AsyncSession, events: Sequence[tuple[EventData, str, str | None]]
    ) -> list[Envelope]:
        """Many events (`(data, key, correlation id or None)`) in one outbox insert, same transaction."""
        return await add_events(session, events, producer=self.settings.service_name, wakeup=self.outbox_wakeup)

    async def publish_direct(self, events: Sequence[tuple[EventData, str, str | None, UUID]]) -> None:
        """Publish `(data, key, correlation id or None, event id)` straight to Kafka (on the bulk producer
        when there is one) and return once Kafka acknowledged every one. At least once and outside any
        transaction: only for facts that need no state change to be true (a device's report), with
        event ids derived from the fact, so that consumers drop a second copy as a duplicate."""
        producer = self.bulk_producer or self.producer
        current = get_correlation_id()
        traceparent = current_traceparent()
        headers = kafka_headers(traceparent)
        sent = []
        for data, key, correlation_id, event_id in events:
            envelope = new_event(
                data,
                key=key,
                producer=self.settings.service_name,
                correlation_id=correlation_id or current,
                event_id=event_id,
                traceparent=traceparent,
            )
            topic = envelope.topic.value
            sent.append(await producer.send(topic, value=envelope.to_bytes(), key=key.encode(), headers=headers))
        await asyncio.gather(*sent)

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
    if tracing_enabled():
        carrier: dict[str, str] = {}
        inject(carrier)  # the current span's traceparent
        request.headers.update(carrier)


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
    # Set for a projection that applies a whole fetch (up to max_records) in one transaction (kit.kafka).
    batch_handler: BatchHandler | None = None
    max_records: int = 200
    # Apply each fetch's events with `handlers` in one transaction (kit.kafka.one_transaction_per_fetch): for
    # projections no user waits on, whose per-event transaction costs more than their handlers (issue 9).
    one_transaction_per_fetch: bool = False

    def effective_batch_handler(self) -> BatchHandler | None:
        if self.batch_handler is not None or not self.one_transaction_per_fetch:
            return self.batch_handler
        return one_transaction_per_fetch(self.handlers)


def tune_gc(gen0_threshold: int) -> None:
    """After startup: what is alive now stays (modules, settings, pools), so it is frozen out of every
    collection, and the youngest generation is collected less often (see ServiceSettings.gc_gen0_threshold)."""
    if gen0_threshold > 0:
        gc.collect()  # only what is alive is frozen (not the garbage of startup, nor of an earlier app in tests)
        gc.freeze()
        gc.set_threshold(gen0_threshold, 50, 100)


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
        tracing = configure_tracing(
            settings.service_name,
            endpoint=settings.otel_exporter_otlp_endpoint,
            sample_ratio=settings.otel_traces_sampler_ratio,
        )
        engine = make_engine(settings.database_url, settings.db_pool_size)
        producer = make_producer(settings.kafka_bootstrap, settings.service_name)
        await start_with_retry(producer, "producer")
        bulk_producer = None
        if settings.outbox_split_lanes:
            bulk_producer = make_producer(settings.kafka_bootstrap, f"{settings.service_name}-bulk")
            await start_with_retry(bulk_producer, "bulk producer")
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
            outbox_wakeup=OutboxWakeup(split=settings.outbox_split_lanes),
            bulk_producer=bulk_producer,
            http=async_client(timeout=5.0, event_hooks={"request": [_propagate_correlation]}),
            verifier=verifier,
            revocations=revocations,
            rate_limiter=RateLimiter.from_settings(engine, settings) if settings.rate_limit_enabled else None,
            trusted_proxies=parse_networks(settings.rate_limit_trusted_proxies),
        )
        app.state.runtime = runtime
        published_offsets = PublishedOffsets()
        relays = _outbox_relays(runtime, published_offsets)
        runtime.readiness_checks["database"] = lambda: ping(engine)
        runtime.readiness_checks["kafka"] = lambda: _kafka_ready(producer, relays)
        for name, relay in relays.items():
            runtime.spawn(relay.run(), name)
        if settings.retention_interval_s > 0:
            runtime.spawn(_prune_periodically(runtime), "retention")
        if settings.broker_loss_check_s > 0:
            watch = BrokerLossWatch(
                runtime.sessionmaker,
                settings.kafka_bootstrap,
                published_offsets,
                runtime.outbox_wakeup,
                replay_window_s=settings.broker_loss_replay_window_s,
                interval_s=settings.broker_loss_check_s,
                client_id=f"{settings.service_name}-broker-watch",
                topic_partitions=settings.kafka_topic_partitions,
            )
            runtime.extras["broker_loss_watch"] = watch
            runtime.spawn(watch.run(), "broker-loss-watch")
        if runtime.rate_limiter is not None:
            runtime.spawn(
                run_periodically(
                    runtime.rate_limiter.cleanup,
                    name="rate-limit-cleanup",
                    interval_s=settings.rate_limit_cleanup_interval_s,
                    run_at_start=False,
                ),
                "rate-limit-cleanup",
            )
        try:
            if settings.token_revocation_listener:
                await _listen_for_revocations(runtime)
            async with AsyncExitStack() as stack:
                if extra_lifespan is not None:
                    await stack.enter_async_context(extra_lifespan(runtime))
                specs = consumers(runtime) if consumers is not None else []
                # The consumers' own connections: requests waiting for an outcome (a borrow waiting for
                # its eject) must never hold the pool the consumer that delivers that outcome needs.
                consumer_engine = make_engine(settings.database_url, settings.db_consumer_pool_size) if specs else None
                if consumer_engine is not None:
                    stack.push_async_callback(consumer_engine.dispose)
                consumer_sessions = make_sessionmaker(consumer_engine) if consumer_engine is not None else None
                event_consumers = [
                    EventConsumer(
                        name=spec.name,
                        bootstrap=settings.kafka_bootstrap,
                        group_id=f"{settings.consumer_group}.{spec.name}",
                        topics=spec.topics,
                        handlers=spec.handlers,
                        sessionmaker=consumer_sessions or runtime.sessionmaker,
                        session_timeout_ms=settings.kafka_session_timeout_ms,
                        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
                        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
                        commit_interval_s=settings.kafka_commit_interval_s,
                        pacing=FetchPacing.for_class(settings, spec.latency),
                        batch_handler=spec.effective_batch_handler(),
                        max_records=spec.max_records,
                    )
                    for spec in specs
                ]
                runtime.event_consumers = event_consumers
                for consumer in event_consumers:
                    runtime.spawn(consumer.run_supervised(), f"consumer-{consumer.name}")
                if event_consumers:
                    runtime.readiness_checks["consumers"] = lambda: _consumers_ready(event_consumers)
                tune_gc(settings.gc_gen0_threshold)
                try:
                    yield
                finally:
                    await _cancel_all(runtime.tasks)
        finally:
            await _cancel_all(runtime.tasks)
            await _bounded_stop("producer", producer.stop())
            if bulk_producer is not None:
                await _bounded_stop("bulk producer", bulk_producer.stop())
            await runtime.http.aclose()
            await _bounded_stop("database pool", engine.dispose())
            if tracing:
                await asyncio.to_thread(shutdown_tracing)  # flushes the spans still buffered (blocking HTTP)

    # Every route counts against its rate class first (kit.ratelimit), before any other dependency.
    app = FastAPI(title=title, lifespan=lifespan, dependencies=[Depends(enforce_rate_limit)])
    app.add_middleware(InputGuardMiddleware)  # inside the observability one: refusals get a correlation id
    app.add_middleware(  # outside the input guard, which reads JSON bodies whole
        BodyLimitMiddleware,
        fastapi=app,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(ObservabilityMiddleware)
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(parked_router)
    for router in routers:
        app.include_router(router)
    return app


async def _prune_periodically(runtime: Runtime) -> None:
    s = runtime.settings

    async def prune_once() -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=s.retention_window_s)
        await prune(
            runtime.sessionmaker, older_than=cutoff, batch=s.retention_batch, max_batches=s.retention_max_batches
        )

    await run_periodically(prune_once, name="retention", interval_s=s.retention_interval_s, run_at_start=False)


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


def _outbox_relays(runtime: Runtime, offsets: PublishedOffsets) -> dict[str, OutboxRelay]:
    """One relay for every event; or, when the service splits its outbox, one per lane."""
    s = runtime.settings
    if runtime.bulk_producer is None:
        return {
            "outbox-relay": OutboxRelay(
                runtime.sessionmaker, runtime.producer, runtime.outbox_wakeup, s.outbox_poll_interval_s, offsets=offsets
            )
        }
    return {
        "outbox-relay": OutboxRelay(
            runtime.sessionmaker,
            runtime.producer,
            runtime.outbox_wakeup,
            s.outbox_poll_interval_s,
            lane=Lane.CRITICAL,
            offsets=offsets,
        ),
        "outbox-relay-bulk": OutboxRelay(
            runtime.sessionmaker,
            runtime.bulk_producer,
            runtime.outbox_wakeup,
            s.outbox_poll_interval_s,
            lane=Lane.BULK,
            offsets=offsets,
        ),
    }


async def _kafka_ready(producer: AIOKafkaProducer, relays: Mapping[str, OutboxRelay]) -> None:
    if not await producer.client.force_metadata_update():
        raise RuntimeError("kafka metadata request failed")
    for name, relay in relays.items():
        if relay.last_error is not None:
            raise RuntimeError(f"{name}: {relay.last_error}")


# A stopping process must end: a client that never finishes stopping (a Kafka consumer caught in a group
# join, a connection the peer never closes) is left behind with its name and stack in the log instead of
# holding the process (a pod that ignores SIGTERM until it is killed; a test run that hangs).
SHUTDOWN_STEP_S = 15.0


async def _cancel_all(tasks: list["asyncio.Task[Any]"]) -> None:
    for task in tasks:
        task.cancel()
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=SHUTDOWN_STEP_S)
    for task in still:
        log.error(
            "shutdown: task %s did not stop within %.0f s; left behind awaiting\n%s",
            task.get_name(),
            SHUTDOWN_STEP_S,
            _awaiting(task),
        )


def _awaiting(task: "asyncio.Task[Any]") -> str:
    """The chain of coroutines a task is suspended in, outermost first (Task.get_stack shows one frame)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(lines) < 50:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "\n".join(lines)


async def _bounded_stop(what: str, stopping: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(stopping, SHUTDOWN_STEP_S)
    except TimeoutError:
        log.error("shutdown: the %s did not stop within %.0f s; left behind", what, SHUTDOWN_STEP_S)


async def _consumers_ready(consumers: Sequence[EventConsumer]) -> None:
    waiting = [c.name for c in consumers if not c.ready]
    if waiting:
        died = {c.name: f"{c.restarts} restarts, last: {c.last_error}" for c in consumers if c.last_error}
        raise RuntimeError(f"consumers not running: {waiting}" + (f"; died: {died}" if died else ""))
