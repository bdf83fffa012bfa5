"""Simulated users on the public HTTP APIs: register (terms), log in, top up through the sandbox,
borrow by scanning a swarm cabinet, hand the bank back at that cabinet, and watch the rental close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "bench-password-1"


def _address(phone: str) -> str:
    """A stable private client address per simulated user (sent as X-Forwarded-For, which uvicorn trusts from
    loopback): user-svc limits codes and logins per client address, and a crowd does not share one phone's."""
    n = int(phone[-8:])
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass(frozen=True)
class Urls:
    user: str
    billing: str
    asset: str
    notify: str


class ApiError(Exception):
    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code} {response.text[:200]}")
        self.status = response.status_code
        self.code = _problem_code(response)


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    return str(body.get("code", f"http_{response.status_code}")) if isinstance(body, dict) else "?"


def load_phones(cache: Path | None) -> list[str]:
    if cache is None or not cache.exists():
        return []
    try:
        return [str(p) for p in json.loads(cache.read_text())["phones"]]
    except (ValueError, TypeError, KeyError):
        return []


def save_phones(cache: Path | None, phones: list[str]) -> None:
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"phones": phones}) + "\n")


@dataclass
class BenchUser:
    phone: str
    token: str
    ended_messages: int = 0
    debits: int = 0
    address: str = "127.0.0.1"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Borrowed:
    rental_id: str
    bank_id: str
    cabinet_id: str
    slot: int


@dataclass
class UserPool:
    urls: Urls
    http: httpx.AsyncClient
    admin_login: tuple[str, str] = ("admin", "dev-admin-password")
    users: list[BenchUser] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # registrations that failed (first 200 chars each)
    _terms: str | None = None
    _admin_token: str | None = None

    async def create(
        self, count: int, balance_fen: int, concurrency: int = 8, cache: Path | None = None
    ) -> tuple[int, int]:
        """`count` users, logged in and with money: the phones in `cache` first (log in again; registering
        costs an SMS code and two password hashes), then new ones (added to `cache`). (reused, new); failed
        registrations are in `failures` (the run goes on with the users it has)."""
        limit = asyncio.Semaphore(concurrency)
        known = load_phones(cache)
        reused = new = 0

        async def one(phone: str | None) -> None:
            nonlocal reused, new
            async with limit:
                user = None
                if phone is not None:
                    with contextlib.suppress(ApiError):
                        user = await self.login(phone, balance_fen)
                        reused += 1
                if user is None:
                    try:
                        user = await self.register(balance_fen)
                    except (ApiError, httpx.HTTPError) as exc:
                        self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                        return
                    new += 1
                self.users.append(user)

        phones: list[str | None] = [*known[:count], *([None] * max(0, count - len(known)))]
        await asyncio.gather(*(one(p) for p in phones))
        save_phones(cache, sorted({*known, *(u.phone for u in self.users)}))
        return reused, new

    async def _admin(self) -> str:
        if self._admin_token is None:
            r = await self.http.post(
                f"{self.urls.user}/v1/admin/sessions",
                json={"login": self.admin_login[0], "password": self.admin_login[1]},
            )
            if r.status_code != 200:
                raise ApiError("admin login", r)
            self._admin_token = str(r.json()["access_token"])
        return self._admin_token

    async def admin_auth(self) -> dict[str, str]:
        """The administrator's Authorization header (the ops API)."""
        return {"Authorization": f"Bearer {await self._admin()}"}

    async def _sms_code(self, phone: str, address: str) -> str:
        """Ask for a registration code and read it from the sandbox provider's outbox (dev stacks only)."""
        headers = {"X-Forwarded-For": address}
        r = await self.http.post(
            f"{self.urls.user}/v1/sms-codes", json={"phone": phone, "purpose": "register"}, headers=headers
        )
        if r.status_code != 202:
            raise ApiError("sms code", r)
        admin = {"Authorization": f"Bearer {await self._admin()}"}
        for _ in range(50):
            r = await self.http.get(
                f"{self.urls.user}/v1/dev/messages", params={"destination": phone, "limit": 1}, headers=admin
            )
            if r.status_code != 200:
                raise ApiError("sandbox outbox", r)
            rows = r.json()
            if rows and rows[0].get("code"):
                return str(rows[0]["code"])
            await asyncio.sleep(0.1)
        raise ApiError("no sms code in the sandbox outbox", r)

    async def login(self, phone: str, balance_fen: int) -> BenchUser:
        address = _address(phone)
        r = await self.http.post(
            f"{self.urls.user}/v1/sessions",
            json={"login": phone, "password": PASSWORD},
            headers={"X-Forwarded-For": address},
        )
        if r.status_code != 200:
            raise ApiError("login", r)
        user = BenchUser(phone, r.json()["access_token"], address=address)
        r = await self.http.get(f"{self.urls.billing}/v1/rentals/current", headers=user.auth)
        if r.status_code == 200:  # e.g. an unlock the benchmark gave up on that the platform later completed
            raise ApiError("still has an open rental", r)
        r = await self.http.get(f"{self.urls.asset}/v1/wallet", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("wallet", r)
        if int(r.json()["balance_fen"]) < balance_fen // 2:
            await self.top_up(user, balance_fen)
        user.ended_messages = await self.ended_messages(user)
        user.debits = await self.debits(user)
        return user

    async def register(self, balance_fen: int) -> BenchUser:
        if self._terms is None:
            r = await self.http.get(f"{self.urls.user}/v1/terms")
            self._terms = str(r.json()["version"])
        phone = f"+86139{uuid.uuid4().int % 100_000_000:08d}"
        address = _address(phone)
        code = await self._sms_code(phone, address)
        r = await self.http.post(
            f"{self.urls.user}/v1/users",
            json={
                "phone": phone,
                "sms_code": code,
                "password": PASSWORD,
                "terms_version": self._terms,
                "terms_accepted": True,
            },
            headers={"X-Forwarded-For": address},
        )
        if r.status_code != 201:
            raise ApiError("register", r)
        r = await self.http.post(
            f"{self.urls.user}/v1/sessions",
            json={"login": phone, "password": PASSWORD},
            headers={"X-Forwarded-For": address},
        )
        if r.status_code != 200:
            raise ApiError("login", r)
        user = BenchUser(phone, r.json()["access_token"], address=address)
        await self.top_up(user, balance_fen)
        user.ended_messages = await self.ended_messages(user)
        user.debits = await self.debits(user)
        return user

    async def top_up(self, user: BenchUser, balance_fen: int) -> None:
        r = await self.http.post(
            f"{self.urls.asset}/v1/wallet/top-ups",
            json={"amount_fen": balance_fen, "channel": "alipay"},
            headers={**user.auth, "Idempotency-Key": uuid.uuid4().hex},
        )
        if r.status_code != 201:
            raise ApiError("top up", r)
        top_up_id = r.json()["top_up_id"]
        deadline = time.monotonic() + 30
        while True:
            r = await self.http.get(f"{self.urls.asset}/v1/wallet/top-ups/{top_up_id}", headers=user.auth)
            if r.status_code == 200 and r.json()["status"] == "succeeded":
                break
            if time.monotonic() > deadline:
                raise ApiError("top up did not succeed within 30 s", r)
            await asyncio.sleep(0.1)

    async def borrow(self, user: BenchUser, cabinet_id: str) -> Borrowed:
        r = await self.http.post(f"{self.urls.billing}/v1/rentals", json={"code": cabinet_id}, headers=user.auth)
        if r.status_code != 201:
            raise ApiError("borrow", r)
        body = r.json()
        if body.get("state") != "active":
            raise ApiError(f"borrow answered state {body.get('state')}", r)
        return Borrowed(str(body["rental_id"]), body["bank_id"], body["cabinet_id"], int(body["slot"]))

    async def rental(self, user: BenchUser, rental_id: str) -> dict[str, Any]:
        r = await self.http.get(f"{self.urls.billing}/v1/rentals/{rental_id}", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("rental", r)
        body: dict[str, Any] = r.json()
        return body

    async def ended_messages(self, user: BenchUser) -> int:
        r = await self.http.get(f"{self.urls.notify}/v1/messages", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("messages", r)
        return sum(1 for m in r.json()["items"] if m["title"].startswith("Rental ended"))

    async def debits(self, user: BenchUser) -> int:
        r = await self.http.get(f"{self.urls.asset}/v1/wallet/entries", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("wallet entries", r)
        body = r.json()
        items = body["items"] if isinstance(body, dict) else body
        return sum(1 for e in items if e["amount_fen"] < 0)

    async def wait_stopped(self, user: BenchUser, rental_id: str, timeout_s: float = 30.0) -> dict[str, float]:
        """Poll (20 ms growing by half to 200 ms) until the rental is ended with a fee, the debit is in the
        wallet and the "Rental ended" message is in the inbox; the monotonic time each was first seen."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, float] = {}
        interval = 0.02
        while len(seen) < 3:
            if time.monotonic() > deadline:
                raise TimeoutError(f"billing stop incomplete after {timeout_s} s: saw {sorted(seen)}")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.2)
            checks = []
            if "ended" not in seen:
                checks.append(("ended", self._ended(user, rental_id)))
            if "fee" not in seen:
                checks.append(("fee", self._debited(user)))
            if "inbox" not in seen:
                checks.append(("inbox", self._messaged(user)))
            results = await asyncio.gather(*(c for _, c in checks))
            now = time.monotonic()
            for (name, _), ok in zip(checks, results, strict=True):
                if ok:
                    seen[name] = now
        user.ended_messages += 1
        user.debits += 1
        return seen

    async def _ended(self, user: BenchUser, rental_id: str) -> bool:
        body = await self.rental(user, rental_id)
        # ended: fee computed; settled / unpaid: and already charged (newer billing moves on quickly)
        return body["state"] in ("ended", "settled", "unpaid") and body.get("fee_fen") is not None

    async def _debited(self, user: BenchUser) -> bool:
        return await self.debits(user) > user.debits

    async def _messaged(self, user: BenchUser) -> bool:
        return await self.ended_messages(user) > user.ended_messages
