"""Unit tests: notification signatures and the sandbox provider (no database, no broker)."""

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from asset_credit_svc.payments import signing
from asset_credit_svc.payments.providers import (
    InvalidSignature,
    MalformedNotification,
    OrderState,
    PaymentOrder,
    PaymentProvider,
)
from asset_credit_svc.payments.sandbox import SandboxProvider, is_declined
from asset_credit_svc.settings import Settings

SECRET = b"unit-test-secret"
PAYLOAD = {
    "out_trade_no": str(uuid.uuid4()),
    "trade_no": "SBX-1",
    "amount_fen": 1000,
    "status": "SUCCESS",
    "paid_at": "2025-01-01T00:00:00+00:00",
    "nonce": "abc",
}


def test_signature_round_trip_and_canonical_form() -> None:
    signature = signing.sign(SECRET, "alipay", PAYLOAD)
    assert signing.verify(SECRET, "alipay", PAYLOAD, signature)
    reordered = dict(reversed(list(PAYLOAD.items())))
    assert signing.verify(SECRET, "alipay", reordered, signature)
    assert signing.verify(SECRET, "alipay", PAYLOAD, signature.upper())


@pytest.mark.parametrize(
    ("secret", "channel", "change"),
    [
        (b"other-secret", "alipay", {}),
        (SECRET, "wechat", {}),
        (SECRET, "alipay", {"amount_fen": 100000}),
        (SECRET, "alipay", {"status": "FAILED"}),
        (SECRET, "alipay", {"extra": "x"}),
    ],
)
def test_signature_refuses_any_change(secret: bytes, channel: str, change: dict[str, object]) -> None:
    signature = signing.sign(SECRET, "alipay", PAYLOAD)
    assert not signing.verify(secret, channel, {**PAYLOAD, **change}, signature)


def test_signature_missing_or_garbage() -> None:
    assert not signing.verify(SECRET, "alipay", PAYLOAD, None)
    assert not signing.verify(SECRET, "alipay", PAYLOAD, "")
    assert not signing.verify(SECRET, "alipay", PAYLOAD, "zz" * 32)


def _sandbox(handler, **kwargs) -> SandboxProvider:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://asset")
    return SandboxProvider("alipay", SECRET, http, pay_delay_s=(0.0, 0.01), notify_backoff_s=0.01, **kwargs)


def test_sandbox_satisfies_the_protocol() -> None:
    assert isinstance(_sandbox(lambda r: httpx.Response(200)), PaymentProvider)


def test_sandbox_verifies_what_it_signs_and_refuses_forgeries() -> None:
    sandbox = _sandbox(lambda r: httpx.Response(200))
    body, headers = sandbox.signed_notification(PAYLOAD)
    assert sandbox.verify_notification(headers, body).amount_fen == 1000
    forged = json.dumps({**PAYLOAD, "amount_fen": 99999}).encode()
    with pytest.raises(InvalidSignature):
        sandbox.verify_notification(headers, forged)
    with pytest.raises(InvalidSignature):
        sandbox.verify_notification({}, body)
    with pytest.raises(MalformedNotification):
        sandbox.verify_notification(headers, b"not json")
    bad = {**PAYLOAD, "amount_fen": "1000"}
    bad_body, bad_headers = sandbox.signed_notification(bad)
    with pytest.raises(MalformedNotification):
        sandbox.verify_notification(bad_headers, bad_body)


def test_declined_amounts() -> None:
    assert is_declined(1099) and is_declined(99)
    assert not is_declined(1000) and not is_declined(1098) and not is_declined(990)


async def test_sandbox_pays_notifies_and_retries_until_acknowledged() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503 if len(calls) < 3 else 200)

    sandbox = _sandbox(handler)
    order_id = str(uuid.uuid4())
    assert (await sandbox.query_order(order_id)).state is OrderState.NOT_FOUND
    await sandbox.create_order(PaymentOrder(order_id, 1234, "t"))
    await sandbox.create_order(PaymentOrder(order_id, 1234, "t"))  # idempotent: one order, one payment
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(calls) == 3
    assert {c.url.path for c in calls} == {"/v1/payments/alipay/notify"}
    notification = sandbox.verify_notification(calls[-1].headers, calls[-1].content)
    assert notification.out_trade_no == order_id
    assert notification.status == "SUCCESS"
    assert notification.amount_fen == 1234
    query = await sandbox.query_order(order_id)
    assert query.state is OrderState.SUCCESS and query.trade_no == notification.trade_no
    await sandbox.aclose()


async def test_sandbox_declines_amounts_ending_in_99() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    sandbox = _sandbox(handler)
    order_id = str(uuid.uuid4())
    await sandbox.create_order(PaymentOrder(order_id, 1099, "t"))
    for _ in range(200):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert sandbox.verify_notification(calls[0].headers, calls[0].content).status == "FAILED"
    assert (await sandbox.query_order(order_id)).state is OrderState.FAILED
    await sandbox.aclose()


def test_production_refuses_the_sandbox_and_development_secrets(tmp_path: Path) -> None:
    """Issue 14: the sandbox only pretends to take money; production refuses to start with it or a
    development secret, and starts with what the deploy files set (`PAYMENT_PROVIDER=none`)."""
    key = tmp_path / "jwt.pub.pem"
    key.write_text("not read here")
    production = {"pb_env": "production", "jwt_public_key_file": key}
    with pytest.raises(ValidationError, match="sandbox"):
        Settings(**production)
    with pytest.raises(ValidationError, match="sandbox"):
        Settings(**production, payment_provider="sandbox", sandbox_payment_secret=SecretStr("a-real-looking-key"))
    with pytest.raises(ValidationError, match="development secret"):
        Settings(**production, payment_provider="none", sandbox_payment_secret=SecretStr("dev-sandbox-payment-secret"))
    assert Settings(**production, payment_provider="none").payment_provider == "none"
    developing = Settings()
    assert developing.payment_provider == "sandbox" and developing.sandbox_payment_secret is not None
