"""notify-svc: `uvicorn notify_svc.main:create_app --factory`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app
from kit.db import unit_of_work
from kit.periodic import run_periodically
from notify_svc import consumers
from notify_svc.context import NotifyContext
from notify_svc.messages.endpoints import router as messages_router
from notify_svc.notices.endpoints import media_router
from notify_svc.notices.endpoints import staff_router as notices_staff_router
from notify_svc.notices.signing import UrlSigner
from notify_svc.settings import Settings
from notify_svc.tickets import service as tickets
from notify_svc.tickets.endpoints import router as tickets_router
from notify_svc.tickets.endpoints import staff_router as tickets_staff_router


def _consumers(_: Runtime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            topics=[Topic.RENTALS, Topic.PAYMENTS, Topic.DEVICE_FAULTS],
            handlers={
                "billing.rental.started": consumers.on_rental_started,
                "billing.rental.ended": consumers.on_rental_ended,
                "billing.rental.failed": consumers.on_rental_failed,
                "asset.charge.settled": consumers.on_charge_settled,
                "asset.charge.failed": consumers.on_charge_failed,
                "asset.refund.settled": consumers.on_refund_settled,
                "device.bank.fault_cleared": consumers.on_bank_fault_cleared,
            },
        )
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        signer = UrlSigner(settings.media_signing_key.get_secret_value().encode(), settings.media_url_ttl_s)
        NotifyContext(settings=settings, signer=signer).install(runtime.extras)
        if settings.ticket_sla_sweep_interval_s > 0:

            async def alert_overdue() -> datetime | None:
                async with unit_of_work(runtime.sessionmaker) as session:
                    return await tickets.alert_overdue(session, runtime)

            runtime.spawn(
                run_periodically(alert_overdue, name="ticket-sla", interval_s=settings.ticket_sla_sweep_interval_s),
                "ticket-sla",
            )
        yield

    return create_service_app(
        settings,
        title="notify-svc",
        routers=[messages_router, tickets_router, tickets_staff_router, notices_staff_router, media_router],
        consumers=_consumers,
        extra_lifespan=lifespan,
    )
