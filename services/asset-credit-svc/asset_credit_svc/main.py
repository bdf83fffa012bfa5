"""asset-credit-svc: `uvicorn asset_credit_svc.main:create_app --factory`."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from asset_credit_svc.consumers import on_charge_requested
from asset_credit_svc.payments.endpoints import PROVIDERS_KEY, notify_router, top_ups_router
from asset_credit_svc.payments.providers import PaymentProvider
from asset_credit_svc.payments.sandbox import SandboxProvider
from asset_credit_svc.settings import Settings
from asset_credit_svc.wallet.endpoints import router as wallet_router
from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app

CHANNELS = ("alipay", "wechat")

# Builds the HTTP client the sandbox notifies through, given the app. Production posts to
# settings.asset_svc_url; tests hand in a client on the in-process ASGI app.
NotifyClientFactory = Callable[[FastAPI, Settings], httpx.AsyncClient]


def default_notify_client(_: FastAPI, settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=settings.asset_svc_url, timeout=5.0)


def create_app(settings: Settings | None = None, *, notify_client: NotifyClientFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    make_client = notify_client or default_notify_client
    app: FastAPI

    @asynccontextmanager
    async def payments_lifespan(runtime: Runtime) -> AsyncIterator[None]:
        http = make_client(app, settings)
        secret = settings.sandbox_payment_secret.get_secret_value().encode()
        sandboxes = [
            SandboxProvider(
                channel,
                secret,
                http,
                pay_delay_s=(settings.sandbox_pay_delay_min_s, settings.sandbox_pay_delay_max_s),
                notify_attempts=settings.sandbox_notify_attempts,
                notify_backoff_s=settings.sandbox_notify_backoff_s,
            )
            for channel in CHANNELS
        ]
        providers: dict[str, PaymentProvider] = {s.channel: s for s in sandboxes}
        runtime.extras[PROVIDERS_KEY] = providers
        try:
            yield
        finally:
            for sandbox in sandboxes:
                await sandbox.aclose()
            await http.aclose()

    app = create_service_app(
        settings,
        title="asset-credit-svc",
        routers=[wallet_router, top_ups_router, notify_router],
        consumers=lambda rt: [
            ConsumerSpec(topics=[Topic.CHARGES], handlers={"billing.charge.requested": on_charge_requested(rt)})
        ],
        extra_lifespan=payments_lifespan,
    )
    return app
