"""All virtual-asset SQL. Never commits."""

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import AssetHistory, AssetStatus, AssetTemplate, UserAsset


async def add_template(session: AsyncSession, template: AssetTemplate) -> None:
    session.add(template)
    await session.flush()


async def template(session: AsyncSession, template_id: uuid.UUID, *, for_update: bool = False) -> AssetTemplate | None:
    stmt = select(AssetTemplate).where(AssetTemplate.id == template_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def templates(session: AsyncSession, *, kind: str | None, limit: int) -> list[AssetTemplate]:
    stmt = select(AssetTemplate).order_by(AssetTemplate.created_at.desc(), AssetTemplate.id).limit(limit)
    if kind is not None:
        stmt = stmt.where(AssetTemplate.kind == kind)
    return list((await session.execute(stmt)).scalars())


async def cards_for_sale(session: AsyncSession) -> list[AssetTemplate]:
    stmt = (
        select(AssetTemplate)
        .where(AssetTemplate.kind == "card", AssetTemplate.active.is_(True), AssetTemplate.price_fen.isnot(None))
        .order_by(AssetTemplate.price_fen, AssetTemplate.id)
    )
    return list((await session.execute(stmt)).scalars())


async def insert_asset(session: AsyncSession, values: dict[str, object]) -> uuid.UUID | None:
    """The new asset's id, or None when (template, user, issue key) was issued before."""
    stmt = (
        insert(UserAsset)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["template_id", "user_id", "issue_key"])
        .returning(UserAsset.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def asset_by_key(
    session: AsyncSession, template_id: uuid.UUID, user_id: uuid.UUID, issue_key: str
) -> UserAsset | None:
    stmt = select(UserAsset).where(
        UserAsset.template_id == template_id, UserAsset.user_id == user_id, UserAsset.issue_key == issue_key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def asset_by_user_key(session: AsyncSession, user_id: uuid.UUID, issue_key: str) -> UserAsset | None:
    stmt = select(UserAsset).where(UserAsset.user_id == user_id, UserAsset.issue_key == issue_key).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def asset(session: AsyncSession, asset_id: uuid.UUID, *, for_update: bool = False) -> UserAsset | None:
    stmt = select(UserAsset).where(UserAsset.id == asset_id).execution_options(populate_existing=True)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_spendable(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> list[tuple[UserAsset, AssetTemplate]]:
    """The user's available, unexpired assets with their templates, locked (in id order, so two
    settlements of one user queue instead of using the same asset twice)."""
    stmt = (
        select(UserAsset, AssetTemplate)
        .join(AssetTemplate, AssetTemplate.id == UserAsset.template_id)
        .where(
            UserAsset.user_id == user_id,
            UserAsset.status == AssetStatus.AVAILABLE.value,
            UserAsset.expires_at > now,
        )
        .order_by(UserAsset.id)
        .with_for_update(of=UserAsset)
        .execution_options(populate_existing=True)
    )
    return [(row[0], row[1]) for row in (await session.execute(stmt)).all()]


async def assets(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None = None,
    template_id: uuid.UUID | None = None,
    kind: str | None = None,
    limit: int = 200,
) -> list[tuple[UserAsset, AssetTemplate]]:
    stmt = (
        select(UserAsset, AssetTemplate)
        .join(AssetTemplate, AssetTemplate.id == UserAsset.template_id)
        .order_by(UserAsset.issued_at.desc(), UserAsset.id)
        .limit(limit)
    )
    if user_id is not None:
        stmt = stmt.where(UserAsset.user_id == user_id)
    if template_id is not None:
        stmt = stmt.where(UserAsset.template_id == template_id)
    if kind is not None:
        stmt = stmt.where(UserAsset.kind == kind)
    return [(row[0], row[1]) for row in (await session.execute(stmt)).all()]


async def due_to_expire(session: AsyncSession, now: datetime, limit: int) -> list[UserAsset]:
    stmt = (
        select(UserAsset)
        .where(UserAsset.status == AssetStatus.AVAILABLE.value, UserAsset.expires_at <= now)
        .order_by(UserAsset.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def set_asset(session: AsyncSession, asset_id: uuid.UUID, now: datetime, **values: object) -> None:
    await session.execute(update(UserAsset).where(UserAsset.id == asset_id).values(updated_at=now, **values))


async def record(session: AsyncSession, asset: UserAsset, action: str, **values: object) -> None:
    session.add(AssetHistory(asset_id=asset.id, user_id=asset.user_id, kind=asset.kind, action=action, **values))
    await session.flush()


async def history(
    session: AsyncSession, *, user_id: uuid.UUID, asset_id: uuid.UUID | None = None, limit: int = 100
) -> list[AssetHistory]:
    stmt = select(AssetHistory).where(AssetHistory.user_id == user_id).order_by(AssetHistory.id.desc()).limit(limit)
    if asset_id is not None:
        stmt = stmt.where(AssetHistory.asset_id == asset_id)
    return list((await session.execute(stmt)).scalars())
