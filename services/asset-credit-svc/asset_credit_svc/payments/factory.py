"""The real providers the settings choose, per channel (the sandbox is built by the app)."""

import logging
from typing import TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

from asset_credit_svc.payments import rsa
from asset_credit_svc.payments.alipay import AlipayConfig, AlipayProvider
from asset_credit_svc.payments.providers import PaymentProvider
from asset_credit_svc.payments.unionpay import UnionPayConfig, UnionPayProvider
from asset_credit_svc.payments.wechatpay import WechatPayConfig, WechatPayProvider, serial_of
from asset_credit_svc.settings import Settings

log = logging.getLogger(__name__)
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
    if settings.provider_for("wechat") == "wechatpay":
        providers["wechat"] = WechatPayProvider(
            WechatPayConfig(
                mchid=required(settings.wechatpay_mchid),
                appid=required(settings.wechatpay_appid),
                merchant_key=rsa.read_private_key(required(settings.wechatpay_merchant_key_file)),
                merchant_serial_no=required(settings.wechatpay_merchant_serial_no),
                apiv3_key=required(settings.wechatpay_apiv3_key).get_secret_value().encode(),
                api_url=settings.wechatpay_api_url,
                notify_url=notify_url(settings, "wechat"),
                trade_type=settings.wechatpay_trade_type,
                platform_keys=wechatpay_keys(settings),
            ),
            http,
        )
    if settings.provider_for("bank_card") == "unionpay":
        providers["bank_card"] = UnionPayProvider(
            UnionPayConfig(
                mer_id=required(settings.unionpay_mer_id),
                sign_key=rsa.read_private_key(required(settings.unionpay_sign_key_file)),
                sign_cert_id=required(settings.unionpay_sign_cert_id),
                root_cert=x509.load_pem_x509_certificate(required(settings.unionpay_root_cert_file).read_bytes()),
                middle_cert=x509.load_pem_x509_certificate(required(settings.unionpay_middle_cert_file).read_bytes()),
                gateway_url=settings.unionpay_gateway_url,
                file_url=settings.unionpay_file_url,
                notify_url=notify_url(settings, "bank_card"),
                front_url=required(settings.unionpay_front_url),
                channel_type=settings.unionpay_channel_type,
            ),
            http,
        )
    return providers


def wechatpay_keys(settings: Settings) -> dict[str, rsa_keys.RSAPublicKey]:
    keys: dict[str, rsa_keys.RSAPublicKey] = {}
    for path in settings.wechatpay_platform_cert_files:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        keys[serial_of(certificate)] = rsa.load_public_key(path.read_bytes())
    if settings.wechatpay_public_key_file and settings.wechatpay_public_key_id:
        keys[settings.wechatpay_public_key_id] = rsa.read_public_key(settings.wechatpay_public_key_file)
    return keys


async def prepare(providers: dict[str, PaymentProvider]) -> None:
    """WeChat Pay without configured keys fetches its platform certificates; a gateway that does not answer
    now is asked again when an answer names a certificate we lack (until then its notifications are refused
    and it repeats them)."""
    for provider in providers.values():
        if isinstance(provider, WechatPayProvider) and not provider.has_keys:
            try:
                await provider.refresh_certificates()
            except Exception:
                log.exception("could not fetch the wechat pay platform certificates")
