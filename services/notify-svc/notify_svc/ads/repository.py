"""SQL of ads, their deduplicated impressions and clicks, the cabinet screens' play counts and playlist version.
Never commits."""

import uuid
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Ad, AdInteraction, AdPlaylistState, AdScreenPlay, AdSlot


def add(session: AsyncSession, ad: Ad) -> None:
    session.add(ad)


async def get(session: AsyncSession, ad_id: uuid.UUID, *, lock: bool = False) -> Ad | None:
    stmt = select(Ad).where(Ad.id == ad_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def recent(session: AsyncSession, slot: AdSlot | None, limit: int) -> Sequence[Ad]:
    stmt = select(Ad).order_by(Ad.created_at.desc(), Ad.id).limit(limit)
    if slot is not None:
        stmt = stmt.where(Ad.slot == slot.value)
    return (await session.scalars(stmt)).all()


async def running(session: AsyncSession, slot: AdSlot, now: datetime) -> Sequence[Ad]:
    """Ads of a slot on air now, oldest first (a stable order for the rotation)."""
    stmt = (
        select(Ad)
        .where(Ad.slot == slot.value, Ad.withdrawn_at.is_(None), Ad.starts_at <= now, Ad.ends_at > now)
        .order_by(Ad.starts_at, Ad.id)
    )
    return (await session.scalars(stmt)).all()


async def not_ended(session: AsyncSession, slot: AdSlot, now: datetime, limit: int) -> Sequence[Ad]:
    """Ads of a slot on air now or later: a cabinet's playlist carries their schedules."""
    stmt = (
        select(Ad)
        .where(Ad.slot == slot.value, Ad.withdrawn_at.is_(None), Ad.ends_at > now)
        .order_by(Ad.starts_at, Ad.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def count(session: AsyncSession, ad_id: uuid.UUID, kind: str, viewer: uuid.UUID, day: date, at: datetime) -> bool:
    """Record one interaction; False when this viewer was already counted for the ad that day."""
    stmt = (
        insert(AdInteraction)
        .values(ad_id=ad_id, kind=kind, viewer=viewer, day=day, at=at)
        .on_conflict_do_nothing()
        .returning(AdInteraction.ad_id)
    )
    return (await session.execute(stmt)).first() is not None


async def counts(session: AsyncSession, ad_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    if not ad_ids:
        return {}
    stmt = (
        select(AdInteraction.ad_id, AdInteraction.kind, func.count())
        .where(AdInteraction.ad_id.in_(ad_ids))
        .group_by(AdInteraction.ad_id, AdInteraction.kind)
    )
    found: dict[uuid.UUID, dict[str, int]] = {}
    for ad_id, kind, n in (await session.execute(stmt)).all():
        found.setdefault(ad_id, {})[kind] = int(n)
    return found


async def existing(session: AsyncSession, slot: AdSlot, ad_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    if not ad_ids:
        return set()
    stmt = select(Ad.id).where(Ad.id.in_(ad_ids), Ad.slot == slot.value)
    return set((await session.scalars(stmt)).all())


async def record_plays(session: AsyncSession, rows: Sequence[dict[str, object]]) -> int:
    """rows: {cabinet_id, report_id, ad_id, plays, period_start, period_end}; the rows of a report seen before
    are left as they are. Returns how many were new."""
    if not rows:
        return 0
    stmt = insert(AdScreenPlay).values(list(rows)).on_conflict_do_nothing().returning(AdScreenPlay.ad_id)
    return len((await session.execute(stmt)).all())


async def screen_counts(session: AsyncSession, ad_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """ad id -> (plays on cabinet screens, distinct cabinets that played it)."""
    if not ad_ids:
        return {}
    stmt = (
        select(AdScreenPlay.ad_id, func.sum(AdScreenPlay.plays), func.count(func.distinct(AdScreenPlay.cabinet_id)))
        .where(AdScreenPlay.ad_id.in_(ad_ids))
        .group_by(AdScreenPlay.ad_id)
    )
    return {ad_id: (int(plays), int(cabinets)) for ad_id, plays, cabinets in (await session.execute(stmt)).all()}


async def next_playlist_version(session: AsyncSession, slot: AdSlot, now_ms: int) -> int:
    """Bump the slot's version; the row stays locked until commit, so versions go out in commit order. The
    version is the clock in ms (at least the previous + 1), so it keeps rising across a restore of this
    database and device-svc, which keeps the highest, does not drop the next playlist as older."""
    await session.execute(
        insert(AdPlaylistState).values(slot=slot.value, version=0).on_conflict_do_nothing(index_elements=["slot"])
    )
    stmt = (
        update(AdPlaylistState)
        .where(AdPlaylistState.slot == slot.value)
        .values(version=func.greatest(AdPlaylistState.version + 1, now_ms))
        .returning(AdPlaylistState.version)
    )
    return int((await session.execute(stmt)).scalar_one())
