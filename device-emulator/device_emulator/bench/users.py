"""Simulated users on the public HTTP APIs: register (terms), log in, top up through the sandbox,
borrow by scanning a swarm cabinet, hand the bank back at that cabinet, and watch the rental close."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
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


class OpenRental(ApiError):
    """A stored user still has a rental open (an unlock the benchmark gave up on that the platform completed)."""

    def __init__(self, user: BenchUser, response: httpx.Response) -> None:
        super().__init__("still has an open rental", response)
        self.user = user


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    return str(body.get("code", f"http_{response.status_code}")) if isinstance(body, dict) else "?"


def load_users(cache: Path | None) -> dict[str, str | None]:
    """phone -> refresh token (None when unknown) from the users file; an older file holds phones only."""
    if cache is None or not cache.exists():
        return {}
    try:
        data = json.loads(cache.read_text())
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    users = data.get("users")
    if isinstance(users, list):
        return {str(u["phone"]): (str(u["refresh_token"]) if u.get("refresh_token") else None) for u in users}
    phones = data.get("phones")
    return {str(p): None for p in phones} if isinstance(phones, list) else {}


def save_users(cache: Path | None, known: dict[str, str | None], users: list[BenchUser]) -> None:
    """Write every phone ever registered, with the newest refresh token of those in `users` (a refresh token is
    spent when used: the file must hold the one issued last, or the next run logs in with the password)."""
    if cache is None:
        return
    merged = dict(known) | {u.phone: u.refresh_token for u in users}
    rows = [{"phone": phone, "refresh_token": token} for phone, token in sorted(merged.items())]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"password": PASSWORD, "users": rows}) + "\n")
    tmp.chmod(0o600)
    tmp.replace(cache)


@dataclass
class BenchUser:
    phone: str
    token: str
    refresh_token: str | None = None
    expires_at: float = math.inf  # monotonic time the access token expires
    # the newest "Rental ended" message and debit seen so far: a rental's are the first ones newer (counting
    # them would stop working once a reused user's history is longer than one page)
    last_ended_message_at: datetime | None = None
    last_debit_id: int = 0
    address: str = "127.0.0.1"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def admin_token(http: httpx.AsyncClient, user_url: str, login: tuple[str, str]) -> str:
    """A staff access token from user-svc's staff sign-in (the dev stacks' administrator by default)."""
    r = await http.post(f"{user_url}/v1/admin/sessions", json={"login": login[0], "password": login[1]})
    if r.status_code != 200:
        raise ApiError("admin login", r)
    return str(r.json()["access_token"])


def _session_user(phone: str, address: str, session: dict[str, Any]) -> BenchUser:
    user = BenchUser(phone, "", address=address)
    _apply_session(user, session)
    return user


def _apply_session(user: BenchUser, session: dict[str, Any]) -> None:
    user.token = str(session["access_token"])
    user.refresh_token = str(session["refresh_token"]) if session.get("refresh_token") else None
    user.expires_at = time.monotonic() + float(session.get("expires_in", 300))


@dataclass
class Prepared:
    """How the simulated users were made ready."""

    refreshed: int = 0  # stored refresh token traded for a session (no password hash)
    logged_in: int = 0  # password login (one hash)
    registered: int = 0  # new user (SMS code, two hashes, a top-up)
    busy: int = 0  # stored users left out this time: a rental still open


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
    polls: collections.Counter[str] = field(default_factory=collections.Counter)  # GETs by kind, see wait_stopped
    _terms: str | None = None
    _admin_token: str | None = None
    _known: dict[str, str | None] = field(default_factory=dict)
    _busy: list[BenchUser] = field(default_factory=list)  # stored users left out: a rental still open

    async def create(self, count: int, balance_fen: int, concurrency: int = 8, cache: Path | None = None) -> Prepared:
        """`count` users, signed in and with money. The users file (`cache`) first: trade the stored refresh token
        for a new session (no password hash), else log in with the password (one hash), and only then register
        new ones (an SMS code and two hashes each; added to the file). A stored user whose rental is still open
        is left out this time (kept in the file). Failures are in `failures` (the run goes on with the users it
        has)."""
        limit = asyncio.Semaphore(concurrency)
        self._known = known = load_users(cache)
        prepared = Prepared()

        async def stored(phone: str) -> None:
            async with limit:
                token = known.get(phone)
                if token is not None:
                    try:
                        self.users.append(await self.resume(phone, token, balance_fen))
                        prepared.refreshed += 1
                        return
                    except OpenRental as exc:  # a password login would not help: keep it for a later run
                        self._busy.append(exc.user)
                        prepared.busy += 1
                        return
                    except (ApiError, httpx.HTTPError):
                        pass  # spent or expired: the password then
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    self.users.append(await self.login(phone, balance_fen))
                    prepared.logged_in += 1

        async def new() -> None:
            async with limit:
                try:
                    self.users.append(await self.register(balance_fen))
                    prepared.registered += 1
                except (ApiError, httpx.HTTPError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])

        untried = list(known)
        while untried and len(self.users) < count:
            batch, untried = untried[: count - len(self.users)], untried[count - len(self.users) :]
            await asyncio.gather(*(stored(phone) for phone in batch))
        await asyncio.gather(*(new() for _ in range(count - len(self.users))))
        self.save(cache)
        return prepared

    def save(self, cache: Path | None) -> None:
        save_users(cache, self._known, [*self._busy, *self.users])

    async def fresh(self, user: BenchUser, margin_s: float = 60.0) -> None:
        """Renew the user's access token with its refresh token when it expires within `margin_s` (runs
        longer than the token's life, 5 minutes by default, keep going)."""
        if user.refresh_token is None or time.monotonic() < user.expires_at - margin_s:
            return
        r = await self.http.post(f"{self.urls.user}/v1/sessions/refresh", json={"refresh_token": user.refresh_token})
        if r.status_code != 200:
            raise ApiError("refresh", r)
        _apply_session(user, r.json())

    async def _admin(self) -> str:
        if self._admin_token is None:
            self._admin_token = await admin_token(self.http, self.urls.user, self.admin_login)
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
        return await self._ready(_session_user(phone, address, r.json()), balance_fen)

    async def resume(self, phone: str, refresh_token: str, balance_fen: int) -> BenchUser:
        """A user of an earlier run, signed in again with its stored refresh token (no password hash)."""
        address = _address(phone)
        r = await self.http.post(
            f"{self.urls.user}/v1/sessions/refresh",
            json={"refresh_token": refresh_token},
            headers={"X-Forwarded-For": address},
        )
        if r.status_code != 200:
            raise ApiError("refresh", r)
        return await self._ready(_session_user(phone, address, r.json()), balance_fen)

    async def _ready(self, user: BenchUser, balance_fen: int) -> BenchUser:
        """No open rental, at least half of `balance_fen` in the wallet (topped up otherwise)."""
        r = await self.http.get(f"{self.urls.billing}/v1/rentals/current", headers=user.auth)
        if r.status_code == 200:
            raise OpenRental(user, r)
        r = await self.http.get(f"{self.urls.asset}/v1/wallet", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("wallet", r)
        if int(r.json()["balance_fen"]) < balance_fen // 2:
            await self.top_up(user, balance_fen)
        user.last_ended_message_at = await self.last_ended_message_at(user)
        user.last_debit_id = await self.last_debit_id(user)
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
        user = _session_user(phone, address, r.json())
        await self.top_up(user, balance_fen)
        user.last_ended_message_at = await self.last_ended_message_at(user)
        user.last_debit_id = await self.last_debit_id(user)
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

    async def borrow(self, user: BenchUser, cabinet_id: str, correlation_id: str) -> Borrowed:
        """Scan `cabinet_id`. `correlation_id` follows the request to the cabinet's eject command, so an error
        answer can be matched with an eject the cabinet did receive."""
        await self.fresh(user)
        headers = {**user.auth, "X-Correlation-ID": correlation_id}
        r = await self.http.post(f"{self.urls.billing}/v1/rentals", json={"code": cabinet_id}, headers=headers)
        if r.status_code != 201:
            raise ApiError("borrow", r)
        body = r.json()
        if body.get("state") != "active":
            raise ApiError(f"borrow answered state {body.get('state')}", r)
        return Borrowed(str(body["rental_id"]), body["bank_id"], body["cabinet_id"], int(body["slot"]))

    async def rental(self, user: BenchUser, rental_id: str) -> dict[str, Any]:
        self.polls["rental"] += 1
        r = await self.http.get(f"{self.urls.billing}/v1/rentals/{rental_id}", headers=user.auth)
        if r.status_code != 200:
            raise ApiError("rental", r)
        body: dict[str, Any] = r.json()
        return body

    async def has_open_rental(self, user: BenchUser) -> bool:
        self.polls["current"] += 1
        await self.fresh(user)
        r = await self.http.get(f"{self.urls.billing}/v1/rentals/current", headers=user.auth)
        if r.status_code not in (200, 404):
            raise ApiError("current rental", r)
        return r.status_code == 200

    async def wait_no_open_rental(self, user: BenchUser, timeout_s: float) -> bool:
        """Poll every 0.5 s until the user has no rental open; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while await self.has_open_rental(user):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True

    async def last_ended_message_at(self, user: BenchUser) -> datetime | None:
        """When the newest "Rental ended" message among the latest few was created (newest first)."""
        self.polls["messages"] += 1
        r = await self.http.get(f"{self.urls.notify}/v1/messages", params={"limit": 5}, headers=user.auth)
        if r.status_code != 200:
            raise ApiError("messages", r)
        items = r.json()["items"]
        ended = [datetime.fromisoformat(m["created_at"]) for m in items if m["title"].startswith("Rental ended")]
        return max(ended, default=user.last_ended_message_at)

    async def last_debit_id(self, user: BenchUser) -> int:
        """The id of the newest debit among the latest few wallet entries (ids grow)."""
        self.polls["wallet_entries"] += 1
        r = await self.http.get(f"{self.urls.asset}/v1/wallet/entries", params={"limit": 5}, headers=user.auth)
        if r.status_code != 200:
            raise ApiError("wallet entries", r)
        body = r.json()
        items = body["items"] if isinstance(body, dict) else body
        return max((int(e["entry_id"]) for e in items if e["amount_fen"] < 0), default=user.last_debit_id)

    async def wait_stopped(self, user: BenchUser, rental_id: str, timeout_s: float = 30.0) -> dict[str, float]:
        """Poll (20 ms growing by half to 200 ms) until the rental is ended with a fee, then until the debit is
        in the wallet and the "Rental ended" message is in the inbox; the monotonic time each was first seen.
        Both follow the end, so they are not asked for before it (a third of the requests); every request is
        counted in `polls`, whose cost the benchmark measures and takes out of the cost per rental."""
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
            else:
                if "fee" not in seen:
                    checks.append(("fee", self._debited(user)))
                if "inbox" not in seen:
                    checks.append(("inbox", self._messaged(user)))
            results = await asyncio.gather(*(c for _, c in checks))
            now = time.monotonic()
            for (name, _), ok in zip(checks, results, strict=True):
                if ok:
                    seen[name] = now
        return seen

    async def _ended(self, user: BenchUser, rental_id: str) -> bool:
        body = await self.rental(user, rental_id)
        # ended: fee computed; settled / unpaid: and already charged (newer billing moves on quickly)
        return body["state"] in ("ended", "settled", "unpaid") and body.get("fee_fen") is not None

    async def _debited(self, user: BenchUser) -> bool:
        latest = await self.last_debit_id(user)
        if latest <= user.last_debit_id:
            return False
        user.last_debit_id = latest
        return True

    async def _messaged(self, user: BenchUser) -> bool:
        latest = await self.last_ended_message_at(user)
        if latest is None or (user.last_ended_message_at is not None and latest <= user.last_ended_message_at):
            return False
        user.last_ended_message_at = latest
        return True
