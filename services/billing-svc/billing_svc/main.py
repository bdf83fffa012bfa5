"""billing-svc: `uvicorn billing_svc.main:create_app --factory --port 8003`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from billing_svc.consumers import consumer_specs
from billing_svc.prices.endpoints import router as prices_router
from billing_svc.rentals import service
from billing_svc.rentals.endpoints import router as rentals_router
from billing_svc.rentals.waiters import OUTCOME_CHANNEL, RentalWaiters
from billing_svc.settings import Settings
from billing_svc.support.endpoints import router as support_router
from billing_svc.users import users_consumer_spec
from kit.app import Runtime, create_service_app
from kit.db import unit_of_work
from kit.periodic import run_periodically
from kit.pg_listen import listen


async def _sweep_unlocking(runtime: Runtime, settings: Settings) -> None:
    """Fail rentals that stayed `unlocking` past `unlocking_expiry_s` (device-svc never answered)."""
    older_than = service.now_utc() - timedelta(seconds=settings.unlocking_expiry_s)
    async with unit_of_work(runtime.sessionmaker) as session:
        await service.expire_unlocking(session, runtime, older_than)


async def _reconcile_returns(runtime: Runtime) -> None:
    """Close active rentals whose bank is back in a cabinet by a stored return report."""
    async with unit_of_work(runtime.sessionmaker) as session:
        await service.reconcile_returns(session, runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        await service.sell_unreturned(session, runtime, service.now_utc())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        waiters = runtime.extras["rental_waiters"] = RentalWaiters()
        # Outcomes applied by any instance's consumer wake the borrows waiting here.
        runtime.spawn(
            listen(settings.database_url, OUTCOME_CHANNEL, waiters.notify_payload, on_connected=waiters.notify_all),
            "rental-outcome-listener",
        )
        if settings.unlocking_expiry_s > 0:

            async def sweep_unlocking() -> None:
                await _sweep_unlocking(runtime, settings)

            runtime.spawn(
                run_periodically(
                    sweep_unlocking, name="unlocking-sweeper", interval_s=settings.sweep_interval_s, run_at_start=False
                ),
                "unlocking-sweeper",
            )
        if settings.reconcile_interval_s > 0:

            async def reconcile_returns() -> None:
                await _reconcile_returns(runtime)

            runtime.spawn(
                run_periodically(
                    reconcile_returns,
                    name="returns-reconciler",
                    interval_s=settings.reconcile_interval_s,
                    run_at_start=False,
                ),
                "returns-reconciler",
            )
        yield

    return create_service_app(
        settings,
        title="billing-svc",
        routers=[prices_router, rentals_router, support_router],
        consumers=lambda rt: [*consumer_specs(rt), users_consumer_spec(rt)],
        extra_lifespan=lifespan,
    )
