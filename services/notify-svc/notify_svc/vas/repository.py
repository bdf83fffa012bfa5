"""SQL of value-added services, their risk notices and the consent records. Never commits."""

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.models import ConsentRecord, RiskNotice, ValueAddedService, VasPayment


async def service(session: AsyncSession, code: str, *, lock: bool = False) -> ValueAddedService | None:
    stmt = select(ValueAddedService).where(ValueAddedService.code == code)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def services(session: AsyncSession) -> Sequence[ValueAddedService]:
    return (await session.scalars(select(ValueAddedService).order_by(ValueAddedService.code))).all()


async def current_notices(session: AsyncSession) -> dict[str, RiskNotice]:
    latest = (
        select(RiskNotice.service_code, func.max(RiskNotice.version).label("version"))
        .group_by(RiskNotice.service_code)
        .subquery()
    )
    stmt = select(RiskNotice).join(
        latest, (RiskNotice.service_code == latest.c.service_code) & (RiskNotice.version == latest.c.version)
    )
    return {n.service_code: n for n in (await session.scalars(stmt)).all()}


async def latest_version(session: AsyncSession, code: str) -> int:
    stmt = select(func.coalesce(func.max(RiskNotice.version), 0)).where(RiskNotice.service_code == code)
    return int((await session.execute(stmt)).scalar_one())


async def latest_consents(session: AsyncSession, user_id: uuid.UUID) -> dict[str, ConsentRecord]:
    """The user's newest record per service."""
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.user_id == user_id)
        .order_by(ConsentRecord.service_code, ConsentRecord.at.desc(), ConsentRecord.id.desc())
        .ext(distinct_on(ConsentRecord.service_code))
    )
    return {r.service_code: r for r in (await session.scalars(stmt)).all()}


async def records_of_user(session: AsyncSession, user_id: uuid.UUID, limit: int) -> Sequence[ConsentRecord]:
    stmt = select(ConsentRecord).where(ConsentRecord.user_id == user_id).order_by(ConsentRecord.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def records_of_service(session: AsyncSession, code: str, limit: int) -> Sequence[ConsentRecord]:
    stmt = (
        select(ConsentRecord).where(ConsentRecord.service_code == code).order_by(ConsentRecord.id.desc()).limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def payments(session: AsyncSession, consent_ids: Sequence[int]) -> dict[int, VasPayment]:
    if not consent_ids:
        return {}
    rows = await session.scalars(select(VasPayment).where(VasPayment.consent_id.in_(consent_ids)))
    return {p.consent_id: p for p in rows.all()}


async def record_payment(session: AsyncSession, payment: dict[str, object]) -> bool:
    """False when this consent's answer was recorded before (a redelivered event)."""
    stmt = insert(VasPayment).values(**payment).on_conflict_do_nothing(index_elements=["consent_id"])
    return (await session.execute(stmt.returning(VasPayment.consent_id))).scalar_one_or_none() is not None


async def payment_for_update(session: AsyncSession, consent_id: int) -> VasPayment | None:
    return await session.get(VasPayment, consent_id, with_for_update=True)


async def consent(session: AsyncSession, consent_id: int) -> ConsentRecord | None:
    return await session.get(ConsentRecord, consent_id)
