"""A thin client for the platform's public HTTP APIs, shared by the demo and the e2e tests."""

import asyncio
import os
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class Urls:
    user: str
    device: str
    billing: str
    asset: str
    notify: str
    analytics: str

    @classmethod
    def from_env(cls) -> "Urls":
        return cls(
            user=os.environ.get("USER_SVC_URL", "http://127.0.0.1:8001"),
            device=os.environ.get("DEVICE_SVC_URL", "http://127.0.0.1:8002"),
            billing=os.environ.get("BILLING_SVC_URL", "http://127.0.0.1:8003"),
            asset=os.environ.get("ASSET_SVC_URL", "http://127.0.0.1:8004"),
            notify=os.environ.get("NOTIFY_SVC_URL", "http://127.0.0.1:8005"),
            analytics=os.environ.get("ANALYTICS_SVC_URL", "http://127.0.0.1:8006"),
        )


@dataclass
class Timed:
    response: httpx.Response
    ms: float

    def json(self) -> Any:
        return self.response.json()

    @property
    def status(self) -> int:
        return self.response.status_code


class PlatformClient:
    def __init__(self, urls: Urls, http: httpx.AsyncClient) -> None:
        self.urls = urls
        self.http = http
        self.token: str | None = None

    def _auth(self, token: str | None = None) -> dict[str, str]:
        tok = token or self.token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    async def call(self, method: str, url: str, *, token: str | None = None, **kw: Any) -> Timed:
        headers = {**self._auth(token), **kw.pop("headers", {})}
        start = time.perf_counter()
        response = await self.http.request(method, url, headers=headers, **kw)
        return Timed(response, (time.perf_counter() - start) * 1000)

    async def register(self, phone: str, password: str) -> Timed:
        terms = (await self.call("GET", f"{self.urls.user}/v1/terms")).json()
        code = await self.sms_code(phone, "register")
        return await self.call(
            "POST",
            f"{self.urls.user}/v1/users",
            json={
                "phone": phone,
                "sms_code": code,
                "password": password,
                "terms_version": terms["version"],
                "terms_accepted": True,
            },
        )

    async def sms_code(self, phone: str, purpose: str) -> str:
        """Ask user-svc to text a code, then read it from the sandbox provider's development outbox
        (an admin-only endpoint that non-production deployments serve)."""
        sent = await self.call("POST", f"{self.urls.user}/v1/sms-codes", json={"phone": phone, "purpose": purpose})
        sent.response.raise_for_status()
        admin = await self.admin_login(
            os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
            os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
        )
        outbox = await self.call(
            "GET", f"{self.urls.user}/v1/dev/messages", token=admin, params={"destination": phone, "limit": 1}
        )
        outbox.response.raise_for_status()
        code: str = outbox.json()[0]["code"]
        return code

    async def login(self, phone: str, password: str) -> Timed:
        timed = await self.call("POST", f"{self.urls.user}/v1/sessions", json={"login": phone, "password": password})
        if timed.status == 200:
            self.token = timed.json()["access_token"]
        return timed

    async def admin_login(self, login: str, password: str) -> str:
        timed = await self.call(
            "POST", f"{self.urls.user}/v1/admin/sessions", json={"login": login, "password": password}
        )
        timed.response.raise_for_status()
        token: str = timed.json()["access_token"]
        return token

    async def regulator_token(self, admin_token: str, *scopes: str) -> str:
        """An API key for the supervision platform, exchanged by OAuth 2.0 client credentials."""
        created = await self.call(
            "POST",
            f"{self.urls.user}/v1/admin/api-keys",
            token=admin_token,
            json={"name": "supervision platform", "scopes": ["supervision:read", *scopes]},
        )
        created.response.raise_for_status()
        client_id, _, secret = created.json()["api_key"].partition(".")
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        issued = await self.call("POST", f"{self.urls.user}/v1/oauth/token", data=form)
        issued.response.raise_for_status()
        token: str = issued.json()["access_token"]
        return token

    async def top_up(self, amount_fen: int, channel: str = "alipay") -> Timed:
        return await self.call(
            "POST",
            f"{self.urls.asset}/v1/wallet/top-ups",
            json={"amount_fen": amount_fen, "channel": channel},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )

    async def top_up_status(self, top_up_id: str) -> Timed:
        return await self.call("GET", f"{self.urls.asset}/v1/wallet/top-ups/{top_up_id}")

    async def wallet(self) -> dict[str, Any]:
        timed = await self.call("GET", f"{self.urls.asset}/v1/wallet")
        timed.response.raise_for_status()
        result: dict[str, Any] = timed.json()
        return result

    async def wallet_entries(self) -> list[dict[str, Any]]:
        timed = await self.call("GET", f"{self.urls.asset}/v1/wallet/entries")
        timed.response.raise_for_status()
        body = timed.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items

    async def borrow(self, code: str) -> Timed:
        return await self.call("POST", f"{self.urls.billing}/v1/rentals", json={"code": code})

    async def rental(self, rental_id: str) -> dict[str, Any]:
        timed = await self.call("GET", f"{self.urls.billing}/v1/rentals/{rental_id}")
        timed.response.raise_for_status()
        result: dict[str, Any] = timed.json()
        return result

    async def messages(self) -> list[dict[str, Any]]:
        timed = await self.call("GET", f"{self.urls.notify}/v1/messages")
        timed.response.raise_for_status()
        items: list[dict[str, Any]] = timed.json()["items"]
        return items

    async def unread(self) -> int:
        timed = await self.call("GET", f"{self.urls.notify}/v1/messages/unread-count")
        timed.response.raise_for_status()
        count: int = timed.json()["unread"]
        return count

    async def report(self, kind: str, text: str, **about: str) -> Timed:
        """A problem report (a support ticket): `about` takes bank_id, cabinet_id, rental_id."""
        return await self.call("POST", f"{self.urls.notify}/v1/tickets", json={"kind": kind, "text": text, **about})

    async def ticket(self, ticket_id: str) -> dict[str, Any]:
        timed = await self.call("GET", f"{self.urls.notify}/v1/tickets/{ticket_id}")
        timed.response.raise_for_status()
        result: dict[str, Any] = timed.json()
        return result

    async def cabinets(self) -> list[dict[str, Any]]:
        timed = await self.call("GET", f"{self.urls.device}/v1/cabinets")
        timed.response.raise_for_status()
        body = timed.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 10.0, interval_s: float = 0.05
) -> tuple[T, float]:
    """Poll `probe` until it returns something truthy; returns it and the milliseconds it took."""
    start = time.perf_counter()
    deadline = start + timeout_s
    while True:
        value = await probe()
        if value:
            return value, (time.perf_counter() - start) * 1000
        if time.perf_counter() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def tiny_png(width: int = 4, height: int = 4) -> bytes:
    """A real (red) PNG image, built without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xe0\x20\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
