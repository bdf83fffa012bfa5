from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import StaffAuditEntry

_CHAIN_LOCK = 0x5EA0D17  # one writer at a time appends to the chain (any replica)


async def lock_chain(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})


async def head(session: AsyncSession) -> tuple[int, str] | None:
    stmt = select(StaffAuditEntry.seq, StaffAuditEntry.hash).order_by(StaffAuditEntry.seq.desc()).limit(1)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


async def exists(session: AsyncSession, event_id: UUID) -> bool:
    stmt = select(StaffAuditEntry.seq).where(StaffAuditEntry.event_id == event_id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def append(session: AsyncSession, values: dict[str, object]) -> None:
    await session.execute(insert(StaffAuditEntry).values(**values))


async def search(
    session: AsyncSession,
    *,
    actor_id: str | None,
    service: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> list[StaffAuditEntry]:
    stmt = select(StaffAuditEntry).order_by(StaffAuditEntry.seq.desc()).limit(limit).offset(offset)
    if actor_id is not None:
        stmt = stmt.where(StaffAuditEntry.actor_id == actor_id)
    if service is not None:
        stmt = stmt.where(StaffAuditEntry.service == service)
    if action is not None:
        stmt = stmt.where(StaffAuditEntry.action == action)
    if target_type is not None:
        stmt = stmt.where(StaffAuditEntry.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(StaffAuditEntry.target_id == target_id)
    if since is not None:
        stmt = stmt.where(StaffAuditEntry.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(StaffAuditEntry.occurred_at < until)
    return list(await session.scalars(stmt))


async def in_order(session: AsyncSession, batch: int = 1000) -> AsyncIterator[StaffAuditEntry]:
    after = 0
    while True:
        stmt = select(StaffAuditEntry).where(StaffAuditEntry.seq > after).order_by(StaffAuditEntry.seq).limit(batch)
        rows = list(await session.scalars(stmt))
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1].seq
