"""What the payment adapters' tests share (Alipay, WeChat Pay, UnionPay): keys and certificates made for the
test, SHA256withRSA both ways, a fake gateway served on a real port that can stall past the adapter's timeout,
and the reads of the service every adapter test makes. Each channel's own protocol (its canonical forms, answers,
notifications and bill files) stays in its test module, written there independently of the adapter."""

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from asset_credit_svc.charges import service as charges
from asset_credit_svc.debts import service as debts
from asset_credit_svc.payments.providers import PaymentProviderError
from contracts.events import ChargeRequested
from kit.db import unit_of_work
from kit.testing import serve_app

BEIJING = timezone(timedelta(hours=8))  # the channels' clock
# The adapters run with a 2 s gateway timeout in these tests; a stalled call must give up well before this,
# even on a loaded machine.
STALL_LIMIT_S = 8.0


# ---- keys, certificates, signatures ---------------------------------------------------------------


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: rsa.RSAPrivateKey | None = None,
    *,
    ca: bool | None = None,
    days: int = 365,
) -> x509.Certificate:
    """A certificate for `key` named `subject`, issued by `issuer` (self-signed without one; a CA by default only
    then), valid from yesterday for `days`."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None if ca is None else ca, path_length=None), True)
        .sign(issuer_key or key, hashes.SHA256())
    )


def _bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


def sha256_rsa(key: rsa.RSAPrivateKey, message: str | bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: Alipay's RSA2, WeChat Pay's and UnionPay's signatures."""
    return base64.b64encode(key.sign(_bytes(message), padding.PKCS1v15(), hashes.SHA256())).decode()


def sha256_rsa_ok(key: rsa.RSAPublicKey, message: str | bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature), _bytes(message), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


# ---- the fake gateway ------------------------------------------------------------------------------


class FakeGateway:
    """A channel's gateway as a Starlette app on a real port. Every handler awaits `hold()` first, so a test can
    stall the gateway (`stalling()`) past the adapter's timeout and then let it answer the caller's retry."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.stalled = asyncio.Event()
        self.released = asyncio.Event()
        self.app = Starlette(routes=list(routes))

    async def hold(self) -> None:
        if self.stalled.is_set():
            await self.released.wait()

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """The gateway on a real port (its base URL); a stalled request is let go at the end."""
        async with serve_app(self.app, lifespan="off") as url:
            try:
                yield url
            finally:
                self.released.set()

    async def times_out(self, call: Awaitable[Any]) -> None:
        """`call` against the stalled gateway gives up (PaymentProviderError) within the adapter's deadline; the
        stalled request is then let go, so the caller's retry is answered."""
        self.released.clear()
        self.stalled.set()
        started = time.monotonic()
        try:
            with pytest.raises(PaymentProviderError):
                await call
            assert time.monotonic() - started < STALL_LIMIT_S
        finally:
            self.stalled.clear()
            self.released.set()


# ---- talking to the service the way a channel does --------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def post_form(client: httpx.AsyncClient, url: str, fields: Mapping[str, str] | str) -> httpx.Response:
    """A form post, as Alipay's and UnionPay's notifications (and a browser posting a channel's pay form) are."""
    return await client.post(url, content=fields if isinstance(fields, str) else urlencode(fields), headers=FORM)


# ---- reads of the service --------------------------------------------------------------------------


async def sql(svc: Any, query: str, **params: Any) -> list[Any]:
    async with svc.runtime.engine.connect() as conn:
        return list((await conn.execute(text(query), params)).all())


async def top_up_status(svc: Any, user: uuid.UUID, top_up_id: str) -> str:
    response = await svc.client.get(f"/v1/wallet/top-ups/{top_up_id}", headers=svc.auth(user))
    return str(response.json()["status"])


# ---- a flow every real channel goes through --------------------------------------------------------


async def fee_becomes_a_debt_paid_in_the_app(
    svc: Any,
    channel: str,
    pay: Callable[[str, datetime, int], Any],
    notify: Callable[[Any], Awaitable[httpx.Response]],
) -> None:
    """A real channel cannot take a rental fee without the user, so a fee the wallet does not cover becomes a debt
    at once, even with the channel chosen as the payment method (no order is opened for it). The user pays two
    debts in the app through the real adapter: `pay(order number, placed at, fen)` makes the channel take one
    (its notification never comes) and returns the channel's trade, `notify(trade)` sends the channel's signed
    notification. The sweep asks the channel: the paid one settles its rental, the unpaid one expires and the rental
    stays owed; the expired one, paid after all, is taken in once and settles its rental."""
    user = uuid.uuid4()
    chosen = await svc.client.put("/v1/wallet/payment-method", json={"channel": channel}, headers=svc.auth(user))
    assert chosen.status_code == 200, chosen.text
    paid = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=150)
    late = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=350)
    payments: dict[uuid.UUID, str] = {}
    for request in (paid, late):
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "failed"
        made = await svc.client.post(
            f"/v1/wallet/debts/{request.rental_id}/payments",
            json={"channel": channel},
            headers={**svc.auth(user), "Idempotency-Key": f"debt-{request.rental_id}"},
        )
        assert made.status_code == 201, made.text
        payments[request.rental_id] = made.json()["payment_id"]
        opened = await svc.client.post(
            f"/v1/wallet/debt-payments/{made.json()['payment_id']}/pay", headers=svc.auth(user)
        )
        assert opened.status_code == 200 and opened.json()["pay_params"], opened.text
    reasons = dict(await sql(svc, "SELECT charge_id, failure_reason FROM charges"))
    assert reasons == {paid.charge_id: "insufficient_balance", late.charge_id: "insufficient_balance"}
    placed = dict(await sql(svc, "SELECT id, created_at FROM debt_payments"))

    def order_of(request: ChargeRequested) -> tuple[str, datetime]:
        payment_id = uuid.UUID(payments[request.rental_id])
        return debts.order_no(payment_id), placed[payment_id]

    pay(*order_of(paid), 150)  # paid at the channel, but its notification never came
    now = datetime.now(UTC)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        resolved = await debts.resolve_stale(
            session, svc.runtime, older_than=now + timedelta(seconds=1), expire_before=now + timedelta(seconds=1)
        )
    assert resolved == 2
    states = {
        r: (s, f, c)
        for r, s, f, c in await sql(
            svc, "SELECT rental_id, status, failure_reason, settled_charge_id FROM debt_payments"
        )
    }
    assert states == {
        paid.rental_id: ("succeeded", None, paid.charge_id),
        late.rental_id: ("failed", "expired", None),
    }
    owed = (await svc.client.get("/v1/wallet/debts", headers=svc.auth(user))).json()
    assert [d["rental_id"] for d in owed["items"]] == [str(late.rental_id)]

    trade = pay(*order_of(late), 350)  # the user paid the expired order after all
    for _ in range(2):  # the channel repeats its notification
        assert (await notify(trade)).status_code == 200
    [(status, settled)] = await sql(
        svc, "SELECT status, settled_charge_id FROM debt_payments WHERE rental_id = :r", r=late.rental_id
    )
    assert (status, settled) == ("succeeded", late.charge_id)
    assert await svc.balance(user) == 0  # each payment became its rental's fee, once
    statuses = dict(await sql(svc, "SELECT charge_id, status FROM charges"))
    assert statuses == {paid.charge_id: "settled", late.charge_id: "settled"}
    credits = await sql(
        svc,
        "SELECT count(*) FROM ledger_transactions WHERE kind = 'provider_payment' AND reference LIKE 'debt_payment:%'",
    )
    assert credits == [(2,)]
