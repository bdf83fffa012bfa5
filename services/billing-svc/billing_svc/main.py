"""billing-svc: `uvicorn billing_svc.main:create_app --factory --port 8003`."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from billing_svc.consumers import consumer_specs
from billing_svc.prices.endpoints import router as prices_router
from billing_svc.rentals import service
from billing_svc.rentals.endpoints import router as rentals_router
from billing_svc.rentals.waiters import RentalWaiters
from billing_svc.settings import Settings
from billing_svc.support.endpoints import router as support_router
from billing_svc.users import users_consumer_spec
from kit.app import Runtime, create_service_app
from kit.db import unit_of_work

log = logging.getLogger(__name__)


async def _sweep_unlocking(runtime: Runtime, settings: Settings) -> None:
    """Fail rentals that stayed `unlocking` past `unlocking_expiry_s` (device-svc never answered)."""
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            older_than = service.now_utc() - timedelta(seconds=settings.unlocking_expiry_s)
            async with unit_of_work(runtime.sessionmaker) as session:
                await service.expire_unlocking(session, runtime, older_than)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unlocking sweep failed; retrying")


async def _reconcile_returns(runtime: Runtime, settings: Settings) -> None:
    """Close active rentals whose bank is back in a cabinet by a stored return report."""
    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                await service.reconcile_returns(session, runtime)
            async with unit_of_work(runtime.sessionmaker) as session:
                await service.sell_unreturned(session, runtime, service.now_utc())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("return reconciliation failed; retrying")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        runtime.extras["rental_waiters"] = RentalWaiters()
        if settings.unlocking_expiry_s > 0:
            runtime.spawn(_sweep_unlocking(runtime, settings), "unlocking-sweeper")
        if settings.reconcile_interval_s > 0:
            runtime.spawn(_reconcile_returns(runtime, settings), "returns-reconciler")
        yield

    return create_service_app(
        settings,
        title="billing-svc",
        routers=[prices_router, rentals_router, support_router],
        consumers=lambda rt: [*consumer_specs(rt), users_consumer_spec(rt)],
        extra_lifespan=lifespan,
    )
