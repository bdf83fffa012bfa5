"""Password hashing (Argon2id, off the event loop) and access-token issuing."""

import asyncio
import secrets
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kit.auth import TokenSigner


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    new_hash: str | None = None  # set when the stored hash used older parameters and was upgraded


class Passwords:
    """Hashes in worker threads, at most `concurrency` at a time: each Argon2 hash holds its
    memory cost, so unbounded concurrency would let a burst of logins exhaust RAM."""

    def __init__(self, hasher: PasswordHasher, concurrency: int) -> None:
        self._hasher = hasher
        self._slots = asyncio.Semaphore(concurrency)
        # A real hash of a random secret with current parameters, verified against when the
        # login names nobody, so both answers take the same time.
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> PasswordCheck:
        async with self._slots:
            return await asyncio.to_thread(self._verify_sync, stored_hash, password)

    async def burn(self, password: str) -> None:
        """Spend the time a real verification would, for a login that matched nobody."""
        async with self._slots:
            await asyncio.to_thread(self._verify_sync, self._dummy_hash, password)

    def _verify_sync(self, stored_hash: str, password: str) -> PasswordCheck:
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return PasswordCheck(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return PasswordCheck(ok=True, new_hash=self._hasher.hash(password))
        return PasswordCheck(ok=True)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    token_id: str = ""


def _issued(token: str, ttl_s: int) -> IssuedToken:
    # Our own freshly signed token: read back its id without verifying again.
    jti = str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))
    return IssuedToken(token, ttl_s, jti)


class Tokens:
    def __init__(self, user_signer: TokenSigner, admin_signer: TokenSigner) -> None:
        self._user = user_signer
        self._admin = admin_signer

    def for_user(self, user_id: str) -> IssuedToken:
        return _issued(self._user.issue(user_id, kind="user", roles=[]), self._user.ttl_s)

    def for_admin(self, admin_id: str, roles: list[str]) -> IssuedToken:
        """No roles: a restricted session that can only complete what its sign-in left pending."""
        return _issued(self._admin.issue(admin_id, kind="admin", roles=roles), self._admin.ttl_s)

    def for_delegated(self, user_id: str, client_id: str, scopes: list[str]) -> IssuedToken:
        """A token for a client application acting for the user, limited to the granted scopes."""
        return _issued(
            self._user.issue(user_id, kind="user", roles=[], scope=" ".join(scopes), client_id=client_id),
            self._user.ttl_s,
        )

    def for_client(self, client_id: str, scopes: list[str]) -> IssuedToken:
        return _issued(self._user.issue(client_id, kind="client", scope=" ".join(scopes)), self._user.ttl_s)
