from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import OAuthClient, OAuthCode, OAuthConsent


async def get_client(session: AsyncSession, client_id: str, *, for_update: bool = False) -> OAuthClient | None:
    return await session.get(OAuthClient, client_id, with_for_update=for_update)


async def list_clients(session: AsyncSession) -> list[OAuthClient]:
    return list(await session.scalars(select(OAuthClient).order_by(OAuthClient.created_at.desc())))


async def get_consent(
    session: AsyncSession, user_id: UUID, client_id: str, *, for_update: bool = False
) -> OAuthConsent | None:
    return await session.get(OAuthConsent, (user_id, client_id), with_for_update=for_update)


async def active_grants(session: AsyncSession, user_id: UUID) -> list[tuple[OAuthConsent, OAuthClient]]:
    stmt = (
        select(OAuthConsent, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthConsent.client_id)
        .where(OAuthConsent.user_id == user_id, OAuthConsent.revoked_at.is_(None), OAuthClient.disabled_at.is_(None))
        .order_by(OAuthConsent.updated_at.desc())
    )
    return [(consent, client) for consent, client in (await session.execute(stmt)).all()]


async def get_code(session: AsyncSession, code_hash: str) -> OAuthCode | None:
    return await session.get(OAuthCode, code_hash, with_for_update=True)
