"""SQL of marketing preferences. Never commits."""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import Preference


async def get(session: AsyncSession, user_id: uuid.UUID) -> Preference | None:
    return (await session.execute(select(Preference).where(Preference.user_id == user_id))).scalar_one_or_none()


async def upsert(session: AsyncSession, user_id: uuid.UUID, values: dict[str, object], at: datetime) -> None:
    row = {"user_id": user_id, **values, "updated_at": at}
    stmt = insert(Preference).values(**row)
    await session.execute(stmt.on_conflict_do_update(index_elements=[Preference.user_id], set_=row))
