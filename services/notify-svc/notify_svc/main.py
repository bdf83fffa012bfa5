"""notify-svc: `uvicorn notify_svc.main:create_app --factory`."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI

from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app
from kit.db import unit_of_work
from kit.httpclient import async_client
from kit.periodic import Alarm, run_periodically
from notify_svc.ads import service as ads_service
from notify_svc.ads.endpoints import router as ads_router
from notify_svc.ads.endpoints import staff_router as ads_staff_router
from notify_svc.audience import consumers as audience
from notify_svc.callbacks.endpoints import hotline_router
from notify_svc.callbacks.endpoints import provider_router as telephony_router
from notify_svc.callbacks.endpoints import router as callbacks_router
from notify_svc.callbacks.endpoints import staff_router as callbacks_staff_router
from notify_svc.callbacks.provider import SandboxTelephony
from notify_svc.campaigns import fanout
from notify_svc.campaigns.endpoints import staff_router as campaigns_staff_router
from notify_svc.consumers import DisputeConsumers, InboxConsumers, VasPaymentConsumers
from notify_svc.context import NotifyContext, context_of
from notify_svc.messages.endpoints import router as messages_router
from notify_svc.messages.endpoints import staff_router as messages_staff_router
from notify_svc.notices.endpoints import media_router
from notify_svc.notices.endpoints import staff_router as notices_staff_router
from notify_svc.notices.signing import UrlSigner
from notify_svc.preferences.endpoints import router as preferences_router
from notify_svc.push import service as push
from notify_svc.push.endpoints import router as push_router
from notify_svc.push.endpoints import staff_router as push_staff_router
from notify_svc.push.provider import SandboxPushProvider
from notify_svc.settings import Settings
from notify_svc.tickets import service as tickets
from notify_svc.tickets.endpoints import router as tickets_router
from notify_svc.tickets.endpoints import staff_router as tickets_staff_router
from notify_svc.vas.endpoints import router as vas_router
from notify_svc.vas.endpoints import staff_router as vas_staff_router


def _consumers(runtime: Runtime) -> list[ConsumerSpec]:
    inbox = InboxConsumers(context_of(runtime).pushes)
    disputes = DisputeConsumers(runtime)
    vas_payments = VasPaymentConsumers(runtime, context_of(runtime).pushes)
    return [
        ConsumerSpec(
            name="audience",
            one_transaction_per_fetch=True,  # upserts of a projection: one transaction per fetch (issue 9)
            topics=[Topic.USERS, Topic.RENTALS, Topic.DEVICE_EJECTS, Topic.DEVICE_RETURNS, Topic.CREDIT, Topic.COUPONS],
            handlers={
                "user.user.registered": audience.on_user_registered,
                "user.user.deregistered": audience.on_user_deregistered,
                "billing.rental.started": audience.on_rental_started,
                "billing.rental.ended": audience.on_rental_ended,
                "device.bank.ejected": audience.on_bank_moved,
                "device.bank.returned": audience.on_bank_moved,
                "asset.credit.changed": audience.on_credit_changed,
                "asset.coupon.changed": audience.on_coupon_changed,
            },
        ),
        ConsumerSpec(
            topics=[Topic.RENTALS, Topic.PAYMENTS, Topic.DEVICE_FAULTS, Topic.DISPUTES],
            one_transaction_per_fetch=True,  # inbox messages, our own rows only (issue 9)
            handlers={
                "billing.rental.started": inbox.on_rental_started,
                "billing.rental.ended": inbox.on_rental_ended,
                "billing.rental.failed": inbox.on_rental_failed,
                "asset.charge.settled": inbox.on_charge_settled,
                "asset.charge.failed": inbox.on_charge_failed,
                "asset.refund.settled": inbox.on_refund_settled,
                "asset.vas_fee.settled": vas_payments.on_settled,
                "asset.vas_fee.failed": vas_payments.on_failed,
                "asset.vas_fee.refunded": vas_payments.on_refunded,
                "device.bank.fault_cleared": inbox.on_bank_fault_cleared,
                "billing.dispute.opened": disputes.on_opened,
                "billing.dispute.resolved": disputes.on_resolved,
            },
        ),
        ConsumerSpec(
            name="screens",
            topics=[Topic.DEVICE_SCREENS],
            one_transaction_per_fetch=True,  # play counts of cabinet screens: our own rows only
            handlers={"device.ad_plays.reported": ads_service.on_plays_reported},
        ),
    ]


# The HTTP client the sandbox telephony provider reports outcomes through (tests give it the app itself).
TelephonyClientFactory = Callable[[FastAPI, Settings], httpx.AsyncClient]


def default_telephony_client(_: FastAPI, settings: Settings) -> httpx.AsyncClient:
    return async_client(base_url=settings.notify_svc_url, timeout=5.0)


def create_app(settings: Settings | None = None, *, telephony_client: TelephonyClientFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    make_client = telephony_client or default_telephony_client
    app: FastAPI

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        telephony_http = make_client(app, settings)
        telephony = SandboxTelephony(settings.telephony_signing_key.get_secret_value().encode(), telephony_http)
        context = NotifyContext(
            settings=settings,
            signer=UrlSigner(settings.media_signing_key.get_secret_value().encode(), settings.media_url_ttl_s),
            push_provider=SandboxPushProvider(failure_rate=settings.push_sandbox_failure_rate),
            telephony=telephony,
            pushes=Alarm(),
            campaigns=Alarm(),
            held_sms=Alarm(),
        )
        context.install(runtime.extras)
        if settings.ticket_sla_sweep_interval_s > 0:

            async def alert_overdue() -> datetime | None:
                async with unit_of_work(runtime.sessionmaker) as session:
                    return await tickets.alert_overdue(session, runtime)

            runtime.spawn(
                run_periodically(alert_overdue, name="ticket-sla", interval_s=settings.ticket_sla_sweep_interval_s),
                "ticket-sla",
            )
        if settings.push_poll_interval_s > 0:

            async def send_pushes() -> datetime | None:
                async with unit_of_work(runtime.sessionmaker) as session:
                    return await push.send_due(session, runtime, context.push_provider)

            runtime.spawn(
                run_periodically(
                    send_pushes, name="push-sender", interval_s=settings.push_poll_interval_s, alarm=context.pushes
                ),
                "push-sender",
            )
        if settings.campaign_poll_interval_s > 0:

            async def send_campaigns() -> datetime | None:
                return await fanout.drain(
                    runtime.sessionmaker,
                    batch_size=settings.campaign_batch_size,
                    budget_s=settings.campaign_budget_s,
                    wakeup=runtime.outbox_wakeup,
                    pushes=context.pushes,
                    held_sms=context.held_sms,
                )

            runtime.spawn(
                run_periodically(
                    send_campaigns,
                    name="campaign-sender",
                    interval_s=settings.campaign_poll_interval_s,
                    alarm=context.campaigns,
                ),
                "campaign-sender",
            )

            async def send_held_sms() -> datetime | None:
                return await fanout.send_held_sms(runtime.sessionmaker, runtime.outbox_wakeup)

            runtime.spawn(
                run_periodically(
                    send_held_sms,
                    name="held-sms-sender",
                    interval_s=settings.campaign_poll_interval_s,
                    alarm=context.held_sms,
                ),
                "held-sms-sender",
            )
        try:
            yield
        finally:
            await telephony.close()
            await telephony_http.aclose()

    app = create_service_app(
        settings,
        title="notify-svc",
        routers=[
            messages_router,
            messages_staff_router,
            tickets_router,
            tickets_staff_router,
            notices_staff_router,
            media_router,
            push_router,
            push_staff_router,
            preferences_router,
            campaigns_staff_router,
            callbacks_router,
            callbacks_staff_router,
            hotline_router,
            telephony_router,
            vas_router,
            vas_staff_router,
            ads_router,
            ads_staff_router,
        ],
        consumers=_consumers,
        extra_lifespan=lifespan,
    )
    return app
