"""Request rate limits on every route of every service (issue 15, OWASP API4).

- Who: the authenticated subject (a user, a staff member, an API key, an OAuth client acting for a user),
  else the client address. `X-Forwarded-For` is read only when the peer is one of the configured trusted
  proxies (`RATE_LIMIT_TRUSTED_PROXIES`), from the right, skipping the proxies themselves: what a client
  writes into the header itself is never the key.
- How many: a class per route, chosen with `rate_class("login")` on the route or its router (none:
  `default`); each class has a limit per window in the settings (`RATE_LIMIT_LOGIN="10/60"`), all of
  them multiplied by `RATE_LIMIT_SCALE` (the local stacks set 100, so tests and benchmarks are not
  throttled; the limiter's own tests set 1).
- Where: sliding-window counters (this window's count plus the previous window's, weighted by how much
  of it still overlaps) in the service's own PostgreSQL, in an UNLOGGED table (no WAL: counters are
  worth nothing after a crash). Every replica of a service shares its database, so the limit holds
  across replicas without a new moving part (no Redis to run, secure and monitor); one upsert is
  one round trip per request. Old windows are deleted by a periodic job.
- Refusal: 429 `rate_limited` with `Retry-After` (when a request would pass again). A key refused once
  is then answered from memory until that moment, without a database round trip, so a flood costs
  the database one statement per key and window, not one per request.
- Failure: fail-open. A database error lets the request through, counted in
  `pb_rate_limit_checks_total{outcome="error"}` and logged (at most every 10 s).
"""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request, params
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kit.addresses import app_trusted_proxies, client_address
from kit.errors import BusinessError, TooManyRequests

if TYPE_CHECKING:
    from kit.auth import Principal
    from kit.settings import ServiceSettings

log = logging.getLogger(__name__)

TABLE = "rate_limit_counters"
DEFAULT = "default"
EXEMPT = "exempt"  # operations routes (/livez, /readyz, /metrics): probes must never be refused
RATE_CLASSES = ("default", "login", "registration", "sms", "borrow", "upload", "export")

CHECKS = Counter("pb_rate_limit_checks_total", "Rate limit checks", ["rate_class", "outcome"])

CREATE_TABLE = f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (
    key text NOT NULL,
    window_start bigint NOT NULL,
    hits integer NOT NULL,
    expires_at bigint NOT NULL,
    CONSTRAINT pk_{TABLE} PRIMARY KEY (key, window_start)
)"""
CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_expires_at ON {TABLE} (expires_at)"

_HIT = text(
    """WITH hit AS (
    INSERT INTO rate_limit_counters AS c (key, window_start, hits, expires_at) VALUES (:key, :start, 1, :expires)
    ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + 1
    RETURNING c.hits
)
SELECT (SELECT hits FROM hit) AS current,
       COALESCE((SELECT hits FROM rate_limit_counters WHERE key = :key AND window_start = :previous), 0) AS previous"""
)
_CLEANUP = text(
    "DELETE FROM rate_limit_counters WHERE (key, window_start) IN "
    "(SELECT key, window_start FROM rate_limit_counters WHERE expires_at < :now LIMIT :batch)"
)

_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s?\s*$")


@dataclass(frozen=True)
class Limit:
    count: int
    window_s: int

    @classmethod
    def parse(cls, spec: str) -> "Limit":
        """`"10/60"`: 10 requests per 60 seconds."""
        match = _LIMIT.match(spec)
        if match is None or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"a rate limit is `<requests>/<seconds>`, both at least 1; got {spec!r}")
        return cls(int(match[1]), int(match[2]))

    def scaled(self, scale: float) -> "Limit":
        return Limit(max(1, int(self.count * scale)), self.window_s)


def retry_after(limit: Limit, *, previous: int, current: int, elapsed: float) -> float:
    """Seconds until a next request would pass, given the window's counts (`current` including the refused
    request) and the seconds `elapsed` since the window started. A request passes when
    previous x (share of the previous window still inside the sliding window) + current <= count."""
    w, n = limit.window_s, limit.count
    if current + 1 <= n and previous > 0:  # within this window, as the previous one slides out
        share_left = (n - current - 1) / previous
        return max(0.0, (1 - share_left) * w - elapsed)
    # In the next window, this one's count is the previous one's and the request is its first.
    share_left = (n - 1) / current
    return (w - elapsed) + max(0.0, 1 - share_left) * w


class RateLimiter:
    """One per process; every replica of a service counts in the same table."""

    def __init__(
        self,
        engine: AsyncEngine,
        limits: dict[str, Limit],
        *,
        clock: Callable[[], float] = time.time,
        memory_size: int = 100_000,
        cleanup_batch: int = 10_000,
    ) -> None:
        if DEFAULT not in limits:
            raise ValueError("the default rate class needs a limit")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")  # one statement, one round trip
        self.limits = limits
        self._clock = clock
        self._refused: dict[str, float] = {}  # key -> clock time when a request passes again
        self._memory_size = memory_size
        self._cleanup_batch = cleanup_batch
        self._last_error_log = float("-inf")

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: "ServiceSettings", **kwargs: object) -> "RateLimiter":
        return cls(engine, settings_limits(settings), **kwargs)  # type: ignore[arg-type]

    def limit(self, rate_class: str) -> Limit:
        return self.limits.get(rate_class) or self.limits[DEFAULT]

    async def check(self, rate_class: str, identity: str) -> None:
        """Count one request of `identity` in `rate_class`; TooManyRequests when over the limit."""
        limit = self.limit(rate_class)
        key = f"{rate_class}|{identity}"
        now = self._clock()
        until = self._refused.get(key)
        if until is not None:
            if now < until:
                CHECKS.labels(rate_class, "refused_memory").inc()
                raise _refusal(rate_class, until - now)
            del self._refused[key]
        start = int(now // limit.window_s) * limit.window_s
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        _HIT,
                        {
                            "key": key,
                            "start": start,
                            "previous": start - limit.window_s,
                            "expires": start + 2 * limit.window_s,
                        },
                    )
                ).one()
        except Exception:
            CHECKS.labels(rate_class, "error").inc()
            if now - self._last_error_log >= 10.0:
                self._last_error_log = now
                log.warning("rate limit check failed; letting requests through", exc_info=True)
            return
        current, previous = int(row.current), int(row.previous)
        elapsed = now - start
        if previous * (1 - elapsed / limit.window_s) + current <= limit.count:
            CHECKS.labels(rate_class, "allowed").inc()
            return
        wait = retry_after(limit, previous=previous, current=current, elapsed=elapsed)
        self._remember(key, now + wait, now)
        CHECKS.labels(rate_class, "refused").inc()
        raise _refusal(rate_class, wait)

    def _remember(self, key: str, until: float, now: float) -> None:
        if len(self._refused) >= self._memory_size:
            for stale in [k for k, t in self._refused.items() if t <= now]:
                del self._refused[stale]
            if len(self._refused) >= self._memory_size:
                return  # a flood of distinct keys: they are counted in the database instead
        self._refused[key] = until

    async def cleanup(self) -> None:
        """Delete windows no check reads any more (a periodic job, `kit.app`)."""
        now = int(self._clock())
        total = 0
        for _ in range(20):
            async with self._engine.connect() as conn:
                deleted = (await conn.execute(_CLEANUP, {"now": now, "batch": self._cleanup_batch})).rowcount
            total += deleted
            if deleted < self._cleanup_batch:
                break
        if total:
            log.debug("rate limit windows deleted", extra={"deleted": total})


def _refusal(rate_class: str, wait_s: float) -> TooManyRequests:
    return TooManyRequests(
        "Too many requests; try again after the time in Retry-After", retry_after_s=wait_s, rate_class=rate_class
    )


def settings_limits(settings: "ServiceSettings") -> dict[str, Limit]:
    return {
        name: Limit.parse(getattr(settings, f"rate_limit_{name}")).scaled(settings.rate_limit_scale)
        for name in RATE_CLASSES
    }


# --------------------------------------------------------------------------- who is asking


def request_address(request: Request) -> str:
    """The client address of a request to a kit service (trusted proxies from its settings)."""
    peer = request.client.host if request.client is not None else None
    return client_address(peer, request.headers.get("x-forwarded-for"), app_trusted_proxies(request.app))


def principal_key(principal: "Principal") -> str:
    if principal.delegated:
        return f"oauth:{principal.client_id}:{principal.subject}"
    kind = {"user": "user", "admin": "staff", "client": "key"}.get(principal.kind, principal.kind)
    return f"{kind}:{principal.subject}"


def identity_of(request: Request) -> str:
    """The authenticated subject when the request carries a valid access token, else its address."""
    runtime = request.app.state.runtime
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if runtime.verifier is not None and scheme.lower() == "bearer" and token.strip():
        try:
            return principal_key(runtime.verifier.verify(token.strip()))  # cached per token (kit.auth)
        except BusinessError:
            pass  # the route refuses the token itself; until then it is counted by address
    return f"addr:{request_address(request)}"


# --------------------------------------------------------------------------- per route


class RateClass:
    """Declares a route's rate class (see `rate_class`); as a dependency it does nothing."""

    def __init__(self, name: str) -> None:
        if name not in RATE_CLASSES and name != EXEMPT:
            raise ValueError(f"unknown rate class {name!r}; known: {', '.join(RATE_CLASSES)}, {EXEMPT}")
        self.name = name

    async def __call__(self) -> None:
        return None


def rate_class(name: str) -> params.Depends:
    """`@router.post(..., dependencies=[rate_class("login")])` or on the APIRouter: the limit this route
    counts against (the innermost declaration wins). Routes that declare none count as `default`."""
    return params.Depends(RateClass(name))


def declared_rate_class(request: Request) -> str:
    route = request.scope.get("route")
    declared = [
        d.dependency.name for d in getattr(route, "dependencies", None) or [] if isinstance(d.dependency, RateClass)
    ]
    return declared[-1] if declared else DEFAULT


async def enforce_rate_limit(request: Request) -> None:
    """Every route's first dependency (kit.app): counts the request, or refuses it with 429."""
    runtime = getattr(request.app.state, "runtime", None)
    limiter: RateLimiter | None = getattr(runtime, "rate_limiter", None)
    if limiter is None:
        return
    name = declared_rate_class(request)
    if name == EXEMPT:
        return
    await limiter.check(name, identity_of(request))
