"""The supervision interface's SQL (reads facts; writes only the access log). Never commits."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import BankFact, BankPositionFact, CabinetRegion, RentalFact, SupervisionAccess
from contracts.regions import code_prefix


def _within(column: Any, regions: frozenset[str]) -> ColumnElement[bool]:
    """Rows in one of `regions` (division codes); every row when none is set."""
    if not regions:
        return true()
    return or_(false(), *(column.like(code_prefix(r) + "%") for r in sorted(regions)))


async def trips_ended(session: AsyncSession, start: datetime, end: datetime, regions: frozenset[str]) -> Sequence[Any]:
    stmt = (
        select(RentalFact)
        .where(
            RentalFact.ended_at >= start,
            RentalFact.ended_at < end,
            or_(_within(RentalFact.start_division, regions), _within(RentalFact.return_division, regions)),
        )
        .order_by(RentalFact.ended_at)
    )
    return (await session.scalars(stmt)).all()


async def rentals_touching(
    session: AsyncSession, start: datetime, end: datetime, regions: frozenset[str]
) -> Sequence[RentalFact]:
    """Rentals that started or ended in [start, end): their trip_start and trip_end events."""
    stmt = select(RentalFact).where(
        or_(
            (RentalFact.started_at >= start) & (RentalFact.started_at < end),
            (RentalFact.ended_at >= start) & (RentalFact.ended_at < end),
        ),
        or_(_within(RentalFact.start_division, regions), _within(RentalFact.return_division, regions)),
    )
    return (await session.scalars(stmt)).all()


async def banks(session: AsyncSession, regions: frozenset[str]) -> Sequence[BankFact]:
    """Banks with a known state (one known only from its module's readings has no event to report yet)."""
    stmt = (
        select(BankFact)
        .where(BankFact.state.is_not(None), _within(BankFact.division, regions))
        .order_by(BankFact.bank_id)
    )
    return (await session.scalars(stmt)).all()


async def positions(
    session: AsyncSession, start: datetime, end: datetime, regions: frozenset[str]
) -> Sequence[tuple[BankPositionFact, list[Any]]]:
    """Bank positions reported in [start, end), each with the rentals of its bank it falls in."""
    during = and_(
        RentalFact.bank_id == BankPositionFact.bank_id,
        RentalFact.started_at <= BankPositionFact.at,
        or_(RentalFact.ended_at.is_(None), BankPositionFact.at <= RentalFact.ended_at),
    )
    stmt = (
        select(BankPositionFact, func.array_remove(func.array_agg(RentalFact.rental_id), None))
        .outerjoin(RentalFact, during)
        .where(BankPositionFact.at >= start, BankPositionFact.at < end, _within(BankPositionFact.division, regions))
        .group_by(BankPositionFact.bank_id, BankPositionFact.at)
        .order_by(BankPositionFact.at, BankPositionFact.bank_id)
    )
    return [(fact, list(rentals or [])) for fact, rentals in (await session.execute(stmt)).all()]


async def cabinets(session: AsyncSession, regions: frozenset[str]) -> Sequence[CabinetRegion]:
    stmt = select(CabinetRegion).where(_within(CabinetRegion.division, regions)).order_by(CabinetRegion.cabinet_id)
    return (await session.scalars(stmt)).all()


async def trips_in_month(
    session: AsyncSession, start: datetime, end: datetime, regions: frozenset[str]
) -> Sequence[Any]:
    """(division, trips, riders) of trips that started in [start, end)."""
    stmt = select(RentalFact.start_division, RentalFact.rental_id, RentalFact.user_id).where(
        RentalFact.started_at >= start, RentalFact.started_at < end, _within(RentalFact.start_division, regions)
    )
    return (await session.execute(stmt)).all()


def record_access(session: AsyncSession, **values: Any) -> None:
    session.add(SupervisionAccess(**values))


async def deposits_held(session: AsyncSession) -> Any:
    """(users holding a deposit, fen held) now: paid minus refunded, per user."""
    return (
        await session.execute(
            text(
                """SELECT count(*) FILTER (WHERE held > 0), coalesce(sum(held) FILTER (WHERE held > 0), 0)
                FROM (SELECT sum(CASE WHEN kind = 'pay' THEN amount_fen ELSE -amount_fen END) AS held
                      FROM deposit_facts GROUP BY user_id) AS per_user"""
            )
        )
    ).one()


async def refunds_pending(session: AsyncSession) -> Any:
    """(refunds requested and not paid yet, their fen, the oldest request time)."""
    return (
        await session.execute(
            text(
                """SELECT count(*), coalesce(sum(amount_fen), 0), min(at) FROM deposit_facts
                WHERE kind = 'refund' AND paid_at IS NULL"""
            )
        )
    ).one()


async def deposits_in(session: AsyncSession, start: datetime, end: datetime) -> Any:
    """Deposits paid and refunds requested in [start, end), and how those refunds were paid."""
    return (
        await session.execute(
            text(
                """SELECT
                  count(*) FILTER (WHERE kind = 'pay'),
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'pay'), 0),
                  count(*) FILTER (WHERE kind = 'refund'),
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0),
                  count(*) FILTER (WHERE kind = 'refund' AND paid_at IS NOT NULL),
                  coalesce(sum(amount_fen) FILTER (WHERE kind = 'refund' AND paid_at IS NOT NULL), 0),
                  count(*) FILTER (WHERE kind = 'refund' AND paid_at <= at + interval '1 day'),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM paid_at - at))
                    FILTER (WHERE kind = 'refund' AND paid_at IS NOT NULL),
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM paid_at - at))
                    FILTER (WHERE kind = 'refund' AND paid_at IS NOT NULL),
                  max(extract(epoch FROM paid_at - at)) FILTER (WHERE kind = 'refund' AND paid_at IS NOT NULL)
                FROM deposit_facts WHERE at >= :start AND at < :end"""
            ),
            {"start": start, "end": end},
        )
    ).one()
