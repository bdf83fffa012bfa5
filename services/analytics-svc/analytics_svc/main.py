"""analytics-svc: `uvicorn analytics_svc.main:create_app --factory`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc import erasure, retention
from analytics_svc.analyses.endpoints import router as analyses_router
from analytics_svc.attributes.endpoints import router as attributes_router
from analytics_svc.consumers import Ingest
from analytics_svc.devices.endpoints import router as devices_router
from analytics_svc.hotspots import service as hotspots
from analytics_svc.hotspots.endpoints import router as hotspots_router
from analytics_svc.rollup import service as rollup
from analytics_svc.settings import Settings
from analytics_svc.stats.endpoints import router as stats_router
from analytics_svc.supervision.endpoints import router as supervision_router
from analytics_svc.webhooks import service as webhooks
from analytics_svc.webhooks.endpoints import router as webhooks_router
from contracts import Envelope, Topic
from contracts.events import EventData
from kit.app import ConsumerSpec, Runtime, create_service_app
from kit.db import unit_of_work
from kit.periodic import run_periodically

TOPICS = [
    Topic.RENTALS,
    Topic.USERS,
    Topic.DEVICE_RETURNS,
    Topic.DEVICE_EJECTS,
    Topic.DEVICE_STATUS,
    Topic.DEVICE_TELEMETRY,
    Topic.DEPOSITS,
    Topic.CREDIT,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    def consumers(_: Runtime) -> list[ConsumerSpec]:
        # Partner webhooks read in a group of their own: a slow partner never holds the facts up.
        partner = {event_type: webhooks.on_event for event_type in webhooks.EVENT_TYPES}
        ingest = Ingest(settings.zone)
        return [
            # A fetch of up to INGEST_BATCH_MAX events is applied in one transaction (issue 11's ingest rate).
            ConsumerSpec(
                topics=TOPICS,
                handlers=ingest.handlers(),
                batch_handler=ingest.apply_batch,
                max_records=settings.ingest_batch_max,
            ),
            ConsumerSpec(topics=list(webhooks.PARTNER_EVENTS), handlers=partner, name="webhooks"),
        ]

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        rules = settings.hotspot_rules
        runtime.extras["hotspot_rules"] = rules
        if settings.hotspot_interval_s > 0:

            async def publish(session: AsyncSession, data: EventData, key: str) -> Envelope:
                return await runtime.publish(session, data, key=key)

            async def evaluate_hotspots() -> None:
                async with unit_of_work(runtime.sessionmaker) as session:
                    await hotspots.evaluate(session, publish, rules)

            runtime.spawn(
                run_periodically(evaluate_hotspots, name="hotspots", interval_s=settings.hotspot_interval_s),
                "hotspots",
            )
        if settings.rollup_interval_s > 0:

            async def refresh_rollup() -> None:
                await rollup.refresh(runtime.sessionmaker)

            runtime.spawn(
                run_periodically(refresh_rollup, name="rollup-refresh", interval_s=settings.rollup_interval_s),
                "rollup-refresh",
            )
        if settings.webhook_interval_s > 0:
            policy = settings.webhook_policy

            async def deliver_webhooks() -> None:
                await webhooks.deliver_due(runtime.sessionmaker, runtime.http, policy)

            runtime.spawn(
                run_periodically(deliver_webhooks, name="webhooks", interval_s=settings.webhook_interval_s),
                "webhooks",
            )
        if settings.erasure_interval_s > 0:

            async def personal_data() -> None:
                now = datetime.now(UTC)
                await erasure.pseudonymise_due(runtime.sessionmaker, now=now, delay_s=settings.erasure_delay_s)
                await retention.prune_positions(runtime.sessionmaker, settings, now=now)

            runtime.spawn(
                run_periodically(personal_data, name="personal-data", interval_s=settings.erasure_interval_s),
                "personal-data",
            )
        yield

    return create_service_app(
        settings,
        title="analytics-svc",
        routers=[
            stats_router,
            analyses_router,
            hotspots_router,
            devices_router,
            attributes_router,
            webhooks_router,
            supervision_router,
        ],
        consumers=consumers,
        extra_lifespan=lifespan,
    )
