"""JWT access tokens: user-svc signs with an Ed25519 private key, every service verifies with the
public key. Only EdDSA is accepted, so `alg: none` and HMAC-confusion tokens are refused."""

import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID, uuid4

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Depends, Request, params

from kit.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from kit.revocation import RevocationList

ALGORITHM = "EdDSA"

# What a client application may do on behalf of a user who consented (OAuth 2.0 authorization code
# flow, user-svc). A delegated token (`client_id` claim) passes only routes that declare one of its
# scopes with `user_scope`; a user's own (first-party) token passes every user route.
USER_SCOPES: dict[str, str] = {
    "profile": "read and edit your profile (user-svc /v1/users/me)",
    "map": "find cabinets and banks (device-svc /v1/cabinets, /v1/banks)",
    "rentals": "borrow, see and pay your rentals, open disputes (billing-svc /v1/rentals, /v1/pricing)",
    "wallet": "see your wallet, deposit and credit, top up (asset-credit-svc /v1/wallet, /v1/deposit, /v1/credit)",
    "messages": "read your messages (notify-svc /v1/messages)",
    "support": "report problems and talk to customer service (notify-svc /v1/tickets)",
}


class TokenRevoked(Unauthorized):
    code = "token_revoked"
    title = "The access token has been revoked"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    title = "The application was not granted access to this"


@dataclass(frozen=True)
class Principal:
    subject: str
    kind: str = "user"  # user | admin | client
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: str = ""
    token: str = ""
    client_id: str = ""  # set on a delegated token: the application acting for the user `subject`

    @property
    def user_id(self) -> UUID:
        return UUID(self.subject)

    @property
    def delegated(self) -> bool:
        return bool(self.client_id)

    def has_any_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def permissions(self) -> frozenset[str]:
        """What this principal may do: an administrator's roles map to permissions through the one
        shared `ROLE_PERMISSIONS` table; a client (API key, third-party app) holds its scopes."""
        if self.delegated:
            return frozenset()  # an application acting for a user never holds administrative permissions
        if self.kind == "admin":
            return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles))
        if self.kind == "client":
            return self.scopes
        return frozenset()

    @property
    def supervision_regions(self) -> frozenset[str]:
        """Division codes a regulator's token is limited to (empty: every region)."""
        return frozenset(
            s.removeprefix(SUPERVISION_REGION_PREFIX) for s in self.scopes if s.startswith(SUPERVISION_REGION_PREFIX)
        )

    def can(self, permission: str) -> bool:
        granted = self.permissions
        return permission in granted or ALL_PERMISSIONS in granted


ALL_PERMISSIONS = "*"
# Where staff routes live in every service: each checks a permission of ROLE_PERMISSIONS.
STAFF_PATH_PREFIXES = ("/v1/admin", "/v1/ops", "/v1/dev", "/v1/stats", "/v1/analytics")

# The government supervision interface (clause 5): a regulator's API key carries `supervision:read`
# and optionally `supervision:region:<division code>` scopes, never any other (user-svc refuses to
# mix them), so its tokens pass `require_regulator` and nothing else. An administrator's `*` does
# not open it: the interface answers regulators only, and each of their accesses is audited.
SUPERVISION_SCOPE = "supervision:read"
SUPERVISION_REGION_PREFIX = "supervision:region:"


def is_supervision_scope(scope: str) -> bool:
    return scope == SUPERVISION_SCOPE or scope.startswith(SUPERVISION_REGION_PREFIX)


# Administrator roles and what each may do (T/CA006-2018 6.3.1). Every service checks permissions
# with `require_permission`, so a role means the same everywhere. Permission names are
# `<area>:<action>`; API keys and client applications carry the same names as scopes.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "super_admin": frozenset({ALL_PERMISSIONS}),
    "operator": frozenset(
        {
            "users:read",
            "rentals:read",
            "devices:read",
            "devices:maintain",
            "devices:provision",
            "firmware:manage",  # firmware images and rollouts (device-svc firmware/)
            "maintenance:dispatch",
            "partners:manage",
            "stats:read",
            "analytics:read",
            "payments:read",
            "assets:manage",
            "pricing:manage",
            "tickets:read",
            "notices:send",
            "campaigns:manage",
            "vas:manage",
            "ads:manage",  # app banners and cabinet screens (notify-svc)
            "events:read",  # parked events of every service (kit.parked)
            "events:replay",
        }
    ),
    "field_maintenance": frozenset({"devices:read", "devices:maintain", "tickets:read"}),
    "support": frozenset(
        {
            "users:read",
            "users:pii",  # reveal one user's phone, e-mail, names (audited; kit.pii masks them otherwise)
            "users:block",
            "rentals:read",
            "rentals:support",
            "payments:read",
            "credit:adjust",
            "dev:read",
            "tickets:read",
            "tickets:manage",
            "notices:send",
        }
    ),
    "finance": frozenset(
        {
            "users:read",
            "rentals:read",
            "rentals:support",
            "payments:read",
            "payments:refund",
            "ledger:read",
            "invoices:manage",  # answer users' invoice requests (asset-credit-svc)
            "assets:manage",
            "pricing:manage",
            "credit:adjust",
        }
    ),
    "analyst": frozenset({"stats:read", "analytics:read", "rentals:read"}),
}
ADMIN_ROLES = frozenset(ROLE_PERMISSIONS)


class TokenVerifier:
    """Verifies access tokens. A token whose signature and claims verified is remembered until it
    expires (a bounded cache keyed by the whole token), so a client polling with the same token pays
    the Ed25519 check once; expiry and the revocation denylist are checked on every call."""

    def __init__(
        self,
        public_key_pem: bytes,
        issuer: str,
        audience: str,
        revocations: "RevocationList | None" = None,
        *,
        cache_size: int = 10_000,
    ) -> None:
        key = load_pem_public_key(public_key_pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the token verification key must be an Ed25519 public key")
        self._key = key  # parsed once: PyJWT would parse a PEM on every decode
        self._issuer = issuer
        self._audience = audience
        self.revocations = revocations
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    @classmethod
    def from_file(
        cls, path: Path, issuer: str, audience: str, revocations: "RevocationList | None" = None
    ) -> "TokenVerifier":
        return cls(path.read_bytes(), issuer, audience, revocations)

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            expires_at, principal = cached
            if time.time() >= expires_at:  # PyJWT's rule (no leeway): expired once now >= exp
                del self._verified[token]
                raise Unauthorized("The access token has expired")
        else:
            expires_at, principal = self._decode(token)
            self._remember(token, expires_at, principal)
        if self.revocations is not None and self.revocations.is_revoked(principal.token_id):
            raise TokenRevoked()
        return principal

    def _decode(self, token: str) -> tuple[float, Principal]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("The access token is not valid") from None
        principal = Principal(
            subject=str(claims["sub"]),
            kind=str(claims.get("kind", "user")),
            roles=frozenset(claims.get("roles", [])),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            token_id=str(claims["jti"]),
            token=token,
            client_id=str(claims.get("client_id", "")),
        )
        return float(claims["exp"]), principal

    def _remember(self, token: str, expires_at: float, principal: Principal) -> None:
        if len(self._verified) >= self._cache_size:
            now = time.time()
            for stale in [t for t, (until, _) in self._verified.items() if until <= now]:
                del self._verified[stale]
            while len(self._verified) >= self._cache_size:
                self._verified.popitem(last=False)  # the oldest verified token pays the check again
        self._verified[token] = (expires_at, principal)


class TokenSigner:
    def __init__(self, private_key_pem: bytes, issuer: str, audience: str, ttl_s: int = 900) -> None:
        self._key = private_key_pem
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s

    @classmethod
    def from_file(cls, path: Path, issuer: str, audience: str, ttl_s: int = 900) -> "TokenSigner":
        return cls(path.read_bytes(), issuer, audience, ttl_s)

    def issue(
        self, subject: str, *, kind: str = "user", roles: list[str] | None = None, scope: str = "", client_id: str = ""
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_s,
            "jti": uuid4().hex,
            "kind": kind,
            "roles": roles or [],
        }
        if scope:
            claims["scope"] = scope
        if client_id:
            claims["client_id"] = client_id  # RFC 9068: the application acting for `sub`
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)


def _bearer(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an access token as `Authorization: Bearer <token>`")
    return token.strip()


class UserScope:
    """Declares the user scope a route belongs to (see `user_scope`); as a dependency it does nothing."""

    def __init__(self, scope: str) -> None:
        if scope not in USER_SCOPES:
            raise ValueError(f"unknown user scope {scope!r}; known: {', '.join(USER_SCOPES)}")
        self.scope = scope

    async def __call__(self) -> None:
        return None


def user_scope(scope: str) -> params.Depends:
    """`APIRouter(dependencies=[user_scope("wallet")])` (or on one route): a delegated token passes
    this route only when it carries `scope`. Routes that declare none refuse every delegated token.
    Declare it on the APIRouter or the route: `include_router(..., dependencies=...)` is not seen."""
    return params.Depends(UserScope(scope))


def _declared_scopes(request: Request) -> frozenset[str]:
    route = request.scope.get("route")
    declared = getattr(route, "dependencies", None) or []
    return frozenset(d.dependency.scope for d in declared if isinstance(d.dependency, UserScope))


async def current_principal(request: Request) -> Principal:
    verifier: TokenVerifier | None = request.app.state.runtime.verifier
    if verifier is None:
        raise Unauthorized("This service has no token verifier configured")
    principal = verifier.verify(_bearer(request))
    if principal.delegated:
        declared = _declared_scopes(request)
        if not declared:
            raise InsufficientScope("Applications acting for a user cannot use this endpoint")
        if not declared & principal.scopes:
            raise InsufficientScope(f"This needs the scope {' or '.join(sorted(declared))!r}", scope=sorted(declared))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.delegated or not principal.has_any_role(*roles):
            raise Forbidden(f"One of these roles is required: {', '.join(roles)}")
        return principal

    return dependency


def require_permission(permission: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """An administrator whose roles grant `permission`, or a client whose scopes include it."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.delegated or not principal.can(permission):
            raise Forbidden(f"The permission {permission!r} is required")
        return principal

    return dependency


def require_regulator() -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A client token (a regulator's API key) holding `supervision:read`; nobody else."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.kind != "client" or SUPERVISION_SCOPE not in principal.scopes:
            raise Forbidden("This interface is for the supervision platform's credential")
        return principal

    return dependency


async def current_user(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "user":
        raise Forbidden("This endpoint is for users")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
