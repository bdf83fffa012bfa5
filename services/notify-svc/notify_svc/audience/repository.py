"""SQL of the audience projection. Every write is an upsert that keeps the newest fact, so events
arriving late or twice leave it right. Never commits."""

import uuid
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.callbacks import lifecycle
from notify_svc.models import (
    AudienceCoupon,
    AudienceMember,
    CabinetRegion,
    CallbackRequest,
    DeferredSms,
    Message,
    Preference,
    PushJob,
    PushToken,
)


async def registered(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    stmt = insert(AudienceMember).values(user_id=user_id, registered_at=at)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[AudienceMember.user_id], set_={"registered_at": at})
    )


async def deregistered(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    stmt = insert(AudienceMember).values(user_id=user_id, deregistered_at=at)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[AudienceMember.user_id], set_={"deregistered_at": at})
    )


async def erase_personal_data(session: AsyncSession, user_id: uuid.UUID) -> None:
    """A deregistered user's inbox, phones (push tokens), waiting pushes and SMS, and preferences go;
    the phone number of a callback request is erased (the request stays, without it, as part of its
    ticket; one still waiting for a call is cancelled). Tickets and VAS consent records are kept: they are
    the record of a complaint and of a consent (docs/service.md "Deregistration")."""
    for model in (PushJob, DeferredSms, PushToken, Message, Preference):
        await session.execute(delete(model).where(model.user_id == user_id))
    callbacks = await session.scalars(
        select(CallbackRequest).where(CallbackRequest.user_id == user_id).with_for_update()
    )
    for callback in callbacks:
        if lifecycle.allowed(callback, "cancel"):
            lifecycle.apply(callback, "cancel")
        callback.phone = ""
        callback.updated_at = func.now()
    await session.flush()


async def active(session: AsyncSession, user_id: uuid.UUID, at: datetime, cabinet_id: str) -> None:
    """The user rented (or returned) at `at` at `cabinet_id`, in its division if known (`cabinet_region`):
    the newest activity wins. One statement: the division is looked up inside it (issue 9)."""
    division = select(CabinetRegion.division_code).where(CabinetRegion.cabinet_id == cabinet_id).scalar_subquery()
    stmt = insert(AudienceMember).values(user_id=user_id, last_active_at=at, division_code=division)
    newer = AudienceMember.last_active_at.is_(None) | (AudienceMember.last_active_at <= at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[AudienceMember.user_id],
        set_={
            "last_active_at": func.greatest(AudienceMember.last_active_at, stmt.excluded.last_active_at),
            "division_code": func.coalesce(stmt.excluded.division_code, AudienceMember.division_code),
        },
        where=newer,
    )
    await session.execute(stmt)


async def credit(session: AsyncSession, user_id: uuid.UUID, level: str, at: datetime) -> None:
    stmt = insert(AudienceMember).values(user_id=user_id, credit_level=level, credit_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[AudienceMember.user_id],
        set_={"credit_level": level, "credit_at": at},
        where=AudienceMember.credit_at.is_(None) | (AudienceMember.credit_at <= at),
    )
    await session.execute(stmt)


async def coupon(
    session: AsyncSession, asset_id: uuid.UUID, user_id: uuid.UUID, status: str, expires_at: datetime, at: datetime
) -> None:
    stmt = insert(AudienceCoupon).values(
        asset_id=asset_id, user_id=user_id, status=status, expires_at=expires_at, at=at
    )
    # A coupon leaves `available` only once: a late `available` never revives a used one.
    stmt = stmt.on_conflict_do_update(
        index_elements=[AudienceCoupon.asset_id],
        set_={"status": status, "at": at},
        where=(AudienceCoupon.status == "available") & (AudienceCoupon.at <= at),
    )
    await session.execute(stmt)


async def cabinet_region(session: AsyncSession, cabinet_id: str, division_code: str) -> None:
    stmt = insert(CabinetRegion).values(cabinet_id=cabinet_id, division_code=division_code)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CabinetRegion.cabinet_id],
        set_={"division_code": division_code},
        where=CabinetRegion.division_code != division_code,  # every eject and return: no write when unchanged
    )
    await session.execute(stmt)
