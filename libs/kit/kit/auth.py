"""JWT access tokens: user-svc signs with an Ed25519 private key, every service verifies with the
public key. Only EdDSA is accepted, so `alg: none` and HMAC-confusion tokens are refused."""

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import jwt
from fastapi import Depends, Request

from kit.errors import Forbidden, Unauthorized

ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class Principal:
    subject: str
    kind: str = "user"  # user | admin | client
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: str = ""
    token: str = ""

    @property
    def user_id(self) -> UUID:
        return UUID(self.subject)

    def has_any_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def permissions(self) -> frozenset[str]:
        """What this principal may do: an administrator's roles map to permissions through the one
        shared `ROLE_PERMISSIONS` table; a client (API key, third-party app) holds its scopes."""
        if self.kind == "admin":
            return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles))
        if self.kind == "client":
            return self.scopes
        return frozenset()

    def can(self, permission: str) -> bool:
        granted = self.permissions
        return permission in granted or ALL_PERMISSIONS in granted


ALL_PERMISSIONS = "*"

# Administrator roles and what each may do (T/CA006-2018 6.3.1). Every service checks permissions
# with `require_permission`, so a role means the same everywhere. Permission names are
# `<area>:<action>`; API keys and client applications carry the same names as scopes.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "super_admin": frozenset({ALL_PERMISSIONS}),
    "operator": frozenset(
        {"users:read", "rentals:read", "devices:read", "devices:operate", "stats:read", "payments:read"}
    ),
    "field_maintenance": frozenset({"devices:read", "devices:maintain"}),
    "support": frozenset({"users:read", "users:block", "rentals:read", "rentals:support", "payments:read", "dev:read"}),
    "finance": frozenset({"users:read", "rentals:read", "payments:read", "payments:refund", "ledger:read"}),
    "analyst": frozenset({"stats:read", "rentals:read"}),
}
ADMIN_ROLES = frozenset(ROLE_PERMISSIONS)


class TokenVerifier:
    def __init__(self, public_key_pem: bytes, issuer: str, audience: str) -> None:
        self._key = public_key_pem
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_file(cls, path: Path, issuer: str, audience: str) -> "TokenVerifier":
        return cls(path.read_bytes(), issuer, audience)

    def verify(self, token: str) -> Principal:
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
        return Principal(
            subject=str(claims["sub"]),
            kind=str(claims.get("kind", "user")),
            roles=frozenset(claims.get("roles", [])),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            token_id=str(claims["jti"]),
            token=token,
        )


class TokenSigner:
    def __init__(self, private_key_pem: bytes, issuer: str, audience: str, ttl_s: int = 900) -> None:
        self._key = private_key_pem
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s

    @classmethod
    def from_file(cls, path: Path, issuer: str, audience: str, ttl_s: int = 900) -> "TokenSigner":
        return cls(path.read_bytes(), issuer, audience, ttl_s)

    def issue(self, subject: str, *, kind: str = "user", roles: list[str] | None = None, scope: str = "") -> str:
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
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)


def _bearer(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an access token as `Authorization: Bearer <token>`")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    verifier: TokenVerifier | None = request.app.state.runtime.verifier
    if verifier is None:
        raise Unauthorized("This service has no token verifier configured")
    return verifier.verify(_bearer(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any_role(*roles):
            raise Forbidden(f"One of these roles is required: {', '.join(roles)}")
        return principal

    return dependency


def require_permission(permission: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """An administrator whose roles grant `permission`, or a client whose scopes include it."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"The permission {permission!r} is required")
        return principal

    return dependency


async def current_user(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "user":
        raise Forbidden("This endpoint is for users")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
