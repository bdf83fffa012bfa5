"""API keys for the government supervision platform and third parties. A key (`pbk_<id>.<secret>`,
shown once) is exchanged for a short-lived access token of kind `client` whose `scope` lists the
key's permissions; every service checks it with `kit.auth.require_permission`, offline."""

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kit.auth import Principal
from user_svc.admins import audit
from user_svc.errors import ApiKeyNotFound, InvalidCredentials
from user_svc.events import EventPublisher
from user_svc.models import ApiKey
from user_svc.security import IssuedToken, Tokens

PREFIX = "pbk_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(
    session: AsyncSession, actor: Principal, *, name: str, scopes: list[str], events: EventPublisher
) -> tuple[ApiKey, str]:
    key_id = uuid4()
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id, name=name, secret_hash=_hash(secret), scopes=sorted(set(scopes)), created_by=UUID(actor.subject)
    )
    session.add(key)
    await session.flush()
    await audit.record_change(
        session,
        events,
        actor,
        "api_key.create",
        target_type="api_key",
        target_id=str(key_id),
        before={},
        after={"name": name, "scopes": key.scopes},
    )
    return key, f"{PREFIX}{key_id.hex}.{secret}"


async def revoke(session: AsyncSession, actor: Principal, key_id: UUID, *, events: EventPublisher) -> None:
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None or key.revoked_at is not None:
        raise ApiKeyNotFound()
    key.revoked_at = datetime.now(UTC)
    await audit.record_change(
        session,
        events,
        actor,
        "api_key.revoke",
        target_type="api_key",
        target_id=str(key_id),
        before={"revoked_at": None},
        after={"revoked_at": key.revoked_at.isoformat()},
    )


async def listing(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())))


async def _verified_key(session: AsyncSession, key_part: str, secret: str) -> ApiKey | None:
    try:
        key_id = UUID(hex=key_part)
    except ValueError:
        return None
    key = await session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.secret_hash, _hash(secret)):
        return None
    return key


async def exchange(session: AsyncSession, api_key: str, tokens: Tokens) -> tuple[IssuedToken, list[str]]:
    key_part, _, secret = api_key.removeprefix(PREFIX).partition(".")
    key = await _verified_key(session, key_part, secret)
    if key is None:
        raise InvalidCredentials()
    return tokens.for_client(str(key.id), key.scopes), key.scopes


async def client_credentials(
    session: AsyncSession, client_id: str, client_secret: str, requested: list[str] | None, tokens: Tokens
) -> tuple[IssuedToken, list[str]] | None:
    """OAuth 2.0 client credentials (RFC 6749 4.4) for an API key: `client_id` is `pbk_<key id>`, the
    secret the part after the dot. The token holds the requested scopes (a subset) or all of the
    key's. None when the credentials are wrong; ValueError when a scope exceeds the key's."""
    if not client_id.startswith(PREFIX):
        return None
    key = await _verified_key(session, client_id.removeprefix(PREFIX), client_secret)
    if key is None:
        return None
    scopes = key.scopes if not requested else sorted(set(requested))
    if not set(scopes) <= set(key.scopes):
        raise ValueError("scope")
    return tokens.for_client(str(key.id), scopes), scopes
