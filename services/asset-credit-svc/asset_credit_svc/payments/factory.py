"""The real providers the settings choose, per channel (the sandbox is built by the app)."""

from typing import TypeVar

import httpx

from asset_credit_svc.payments import rsa
from asset_credit_svc.payments.alipay import AlipayConfig, AlipayProvider
from asset_credit_svc.payments.providers import PaymentProvider
from asset_credit_svc.settings import Settings

T = TypeVar("T")


def required(value: T | None) -> T:
    if value is None:  # the settings' validator refuses this first
        raise ValueError("a payment provider setting is missing")
    return value


def notify_url(settings: Settings, channel: str) -> str:
    base = (settings.payment_notify_base_url or "").rstrip("/")
    return f"{base}/v1/payments/{channel}/notify"


def real_providers(settings: Settings, http: httpx.AsyncClient) -> dict[str, PaymentProvider]:
    """Reads the keys now, so a missing or wrong key stops the service at start, not at the first payment."""
    providers: dict[str, PaymentProvider] = {}
    if settings.provider_for("alipay") == "alipay":
        providers["alipay"] = AlipayProvider(
            AlipayConfig(
                app_id=required(settings.alipay_app_id),
                app_private_key=rsa.read_private_key(required(settings.alipay_app_private_key_file)),
                alipay_public_key=rsa.read_public_key(required(settings.alipay_public_key_file)),
                gateway_url=settings.alipay_gateway_url,
                notify_url=notify_url(settings, "alipay"),
            ),
            http,
        )
    return providers
