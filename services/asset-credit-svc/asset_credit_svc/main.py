"""asset-credit-svc: `uvicorn asset_credit_svc.main:create_app --factory`."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from asset_credit_svc.assets import service as assets
from asset_credit_svc.assets.endpoints import router as assets_router
from asset_credit_svc.charges import service as charges
from asset_credit_svc.consumers import (
    on_charge_requested,
    on_debt_waived,
    on_refund_requested,
    on_rental_event,
    on_user_deregistered,
    on_vas_consent,
)
from asset_credit_svc.credit.endpoints import router as credit_router
from asset_credit_svc.debts import service as debts
from asset_credit_svc.debts.endpoints import router as debts_router
from asset_credit_svc.deposit import service as deposits
from asset_credit_svc.deposit.endpoints import router as deposit_router
from asset_credit_svc.finance.endpoints import router as finance_router
from asset_credit_svc.invoices.endpoints import admin_router as invoices_admin_router
from asset_credit_svc.invoices.endpoints import router as invoices_router
from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.endpoints import PROVIDERS_KEY, notify_router, top_ups_router
from asset_credit_svc.payments.factory import prepare, real_providers
from asset_credit_svc.payments.providers import PaymentProvider
from asset_credit_svc.payments.sandbox import SandboxProvider
from asset_credit_svc.receipts.endpoints import router as receipts_router
from asset_credit_svc.reconciliation import router as reconciliation_router
from asset_credit_svc.settings import CHANNELS, Settings
from asset_credit_svc.statements import service as statements
from asset_credit_svc.statements.endpoints import router as statements_router
from asset_credit_svc.vas.endpoints import router as vas_router
from asset_credit_svc.wallet.endpoints import admin_router as wallet_admin_router
from asset_credit_svc.wallet.endpoints import router as wallet_router
from asset_credit_svc.withdrawals import service as withdrawals
from asset_credit_svc.withdrawals.endpoints import router as withdrawals_router
from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app
from kit.db import unit_of_work
from kit.httpclient import async_client
from kit.kafka import LatencyClass
from kit.periodic import run_periodically

# Builds the HTTP client the sandbox notifies through, given the app. Production posts to
# settings.asset_svc_url; tests hand in a client on the in-process ASGI app.
NotifyClientFactory = Callable[[FastAPI, Settings], httpx.AsyncClient]


def default_notify_client(_: FastAPI, settings: Settings) -> httpx.AsyncClient:
    return async_client(base_url=settings.asset_svc_url, timeout=5.0)


async def _resolve_provider_charges(runtime: Runtime, settings: Settings) -> None:
    """Charges awaiting a provider whose notification did not come: ask the provider."""
    now = datetime.now(UTC)
    async with unit_of_work(runtime.sessionmaker) as session:
        await charges.resolve_unknown_outcomes(
            session,
            runtime,
            older_than=now - timedelta(seconds=settings.provider_query_after_s),
            give_up_before=now - timedelta(seconds=settings.provider_give_up_after_s),
        )
    async with unit_of_work(runtime.sessionmaker) as session:
        await deposits.retry_pending_refunds(session, runtime, now - timedelta(seconds=settings.provider_query_after_s))
    async with unit_of_work(runtime.sessionmaker) as session:
        await withdrawals.retry_pending_parts(
            session, runtime, now - timedelta(seconds=settings.provider_query_after_s)
        )


async def _resolve_stale_top_ups(runtime: Runtime, settings: Settings) -> None:
    now = datetime.now(UTC)
    async with unit_of_work(runtime.sessionmaker) as session:
        await top_ups.resolve_stale_top_ups(
            session,
            runtime,
            older_than=now - timedelta(seconds=settings.top_up_query_after_s),
            expire_before=now - timedelta(seconds=settings.top_up_expire_after_s),
        )
    async with unit_of_work(runtime.sessionmaker) as session:
        await deposits.resolve_stale_payments(
            session, runtime, older_than=now - timedelta(seconds=settings.top_up_query_after_s)
        )
    async with unit_of_work(runtime.sessionmaker) as session:
        await debts.resolve_stale(
            session,
            runtime,
            older_than=now - timedelta(seconds=settings.top_up_query_after_s),
            expire_before=now - timedelta(seconds=settings.top_up_expire_after_s),
        )


async def _expire_assets(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        await assets.expire_due(session, datetime.now(UTC))


def create_app(settings: Settings | None = None, *, notify_client: NotifyClientFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    make_client = notify_client or default_notify_client
    app: FastAPI

    @asynccontextmanager
    async def payments_lifespan(runtime: Runtime) -> AsyncIterator[None]:
        http = make_client(app, settings)
        secret = settings.sandbox_payment_secret.get_secret_value().encode() if settings.sandbox_payment_secret else b""
        sandboxes = [
            SandboxProvider(
                channel,
                secret,
                http,
                pay_delay_s=(settings.sandbox_pay_delay_min_s, settings.sandbox_pay_delay_max_s),
                notify_attempts=settings.sandbox_notify_attempts,
                notify_backoff_s=settings.sandbox_notify_backoff_s,
                state_file=settings.sandbox_state_dir / f"{channel}.json" if settings.sandbox_state_dir else None,
            )
            for channel in CHANNELS
            if settings.provider_for(channel) == "sandbox"
        ]
        for sandbox in sandboxes:
            sandbox.resume()
        gateways = httpx.AsyncClient(timeout=settings.payment_gateway_timeout_s)
        providers: dict[str, PaymentProvider] = {s.channel: s for s in sandboxes}
        providers.update(real_providers(settings, gateways))
        await prepare(providers)
        runtime.extras[PROVIDERS_KEY] = providers
        if settings.provider_sweep_interval_s > 0:

            async def resolve_provider_charges() -> None:
                await _resolve_provider_charges(runtime, settings)

            runtime.spawn(
                run_periodically(
                    resolve_provider_charges,
                    name="provider-charge-sweeper",
                    interval_s=settings.provider_sweep_interval_s,
                    run_at_start=False,
                ),
                "provider-charge-sweeper",
            )
        if settings.top_up_sweep_interval_s > 0:

            async def resolve_stale_top_ups() -> None:
                await _resolve_stale_top_ups(runtime, settings)

            runtime.spawn(
                run_periodically(
                    resolve_stale_top_ups,
                    name="stale-top-up-sweeper",
                    interval_s=settings.top_up_sweep_interval_s,
                    run_at_start=False,
                ),
                "stale-top-up-sweeper",
            )
        if settings.asset_expiry_interval_s > 0:

            async def expire_assets() -> None:
                await _expire_assets(runtime)

            runtime.spawn(
                run_periodically(
                    expire_assets,
                    name="asset-expiry-sweeper",
                    interval_s=settings.asset_expiry_interval_s,
                    run_at_start=False,
                ),
                "asset-expiry-sweeper",
            )
        if settings.statement_interval_s > 0 and statements.statement_sources(providers):

            async def reconcile_statements() -> None:
                await statements.reconcile_recent_days(runtime, providers)

            runtime.spawn(
                run_periodically(
                    reconcile_statements,
                    name="statement-reconciler",
                    interval_s=settings.statement_interval_s,
                    run_at_start=False,
                ),
                "statement-reconciler",
            )
        try:
            yield
        finally:
            for sandbox in sandboxes:
                await sandbox.aclose()
            await http.aclose()
            await gateways.aclose()

    app = create_service_app(
        settings,
        title="asset-credit-svc",
        routers=[
            wallet_router,
            wallet_admin_router,
            withdrawals_router,
            top_ups_router,
            notify_router,
            deposit_router,
            debts_router,
            reconciliation_router,
            statements_router,
            vas_router,
            finance_router,
            receipts_router,
            invoices_router,
            invoices_admin_router,
            credit_router,
            assets_router,
        ],
        consumers=_consumers,
        extra_lifespan=payments_lifespan,
    )
    return app


def _consumers(rt: Runtime) -> list[ConsumerSpec]:
    rental_events = on_rental_event(rt)
    return [
        ConsumerSpec(
            # Money the platform collects: rental charges, refunds, waived debts, priced value-added services.
            topics=[Topic.CHARGES, Topic.VAS_CONSENTS],
            handlers={
                "billing.charge.requested": on_charge_requested(rt),
                "billing.refund.requested": on_refund_requested(rt),
                "billing.debt.waived": on_debt_waived(rt),
                "notify.vas_consent.recorded": on_vas_consent(rt),
            },
            latency=LatencyClass.CRITICAL,  # a rental's charge settles right after it ends
        ),
        ConsumerSpec(
            topics=[Topic.RENTALS, Topic.USERS],
            handlers={
                "billing.rental.started": rental_events,
                "billing.rental.ended": rental_events,
                "billing.rental.failed": rental_events,
                "user.user.deregistered": on_user_deregistered(rt),
            },
            name="deposits",
            one_transaction_per_fetch=True,  # deposits and credit: our own rows, no user waits (issue 9)
        ),
    ]
