"""What the payment adapters' tests share (Alipay, WeChat Pay, UnionPay): keys and certificates made for the
test, SHA256withRSA both ways, a fake gateway served on a real port that can stall past the adapter's timeout,
and the reads of the service every adapter test makes. Each channel's own protocol (its canonical forms, answers,
notifications and bill files) stays in its test module, written there independently of the adapter."""

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
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

from asset_credit_svc.payments.providers import PaymentProviderError
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
