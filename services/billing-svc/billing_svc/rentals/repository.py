"""All SQL on rentals. Never commits (flush is fine)."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc.models import OPEN_STATES, Rental, RentalState, UnmatchedReturn
from billing_svc.users import UserAccess


async def add(session: AsyncSession, rental: Rental) -> None:
    session.add(rental)
    await session.flush()


async def get(session: AsyncSession, rental_id: UUID, *, for_update: bool = False) -> Rental | None:
    stmt = select(Rental).where(Rental.id == rental_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_own(session: AsyncSession, user_id: UUID, rental_id: UUID) -> Rental | None:
    stmt = select(Rental).where(Rental.id == rental_id, Rental.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_idempotency_key(session: AsyncSession, user_id: UUID, key: str) -> Rental | None:
    stmt = select(Rental).where(Rental.user_id == user_id, Rental.idempotency_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_for_user(session: AsyncSession, user_id: UUID) -> Rental | None:
    """The user's unlocking or active rental (newest first if the one-per-user rule is off)."""
    stmt = (
        select(Rental)
        .where(Rental.user_id == user_id, Rental.state.in_([s.value for s in OPEN_STATES]))
        .order_by(Rental.requested_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True)
class Borrower:
    """What a borrow checks about its user, read in one round trip (`borrower`)."""

    access_status: str | None  # billing's projection of user-svc's account status (None: never blocked)
    same_key: Rental | None  # the rental an earlier request with this Idempotency-Key created
    open: Rental | None  # the user's unlocking or active rental, newest first
    unpaid: list[Rental]  # oldest first


async def borrower(session: AsyncSession, user_id: UUID, idempotency_key: str | None) -> Borrower:
    """The user's access status and the rentals a borrow decides on (same key, open, unpaid) in ONE statement:
    a borrow used to run four (issue 9). The one-row `anchor` keeps the status when no rental matches."""
    anchor = select(literal(1).label("one")).subquery()
    wanted: ColumnElement[bool] = Rental.state.in_([s.value for s in (*OPEN_STATES, RentalState.UNPAID)])
    if idempotency_key is not None:
        wanted = or_(wanted, Rental.idempotency_key == idempotency_key)
    stmt = (
        select(UserAccess.status, Rental)
        .select_from(anchor)
        .outerjoin(UserAccess, UserAccess.user_id == user_id)
        .outerjoin(Rental, and_(Rental.user_id == user_id, wanted))
        .order_by(Rental.requested_at)
    )
    status: str | None = None
    rentals: list[Rental] = []
    for row in (await session.execute(stmt)).all():
        status = row[0]
        if row[1] is not None:
            rentals.append(row[1])
    open_states = {s.value for s in OPEN_STATES}
    opened = [r for r in rentals if r.state in open_states]
    return Borrower(
        access_status=status,
        same_key=next(
            (r for r in rentals if idempotency_key is not None and r.idempotency_key == idempotency_key), None
        ),
        open=opened[-1] if opened else None,
        unpaid=[r for r in rentals if r.state == RentalState.UNPAID.value],
    )


async def active_for_bank(session: AsyncSession, bank_id: str, *, for_update: bool = True) -> Rental | None:
    stmt = select(Rental).where(Rental.bank_id == bank_id, Rental.state == RentalState.ACTIVE.value)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def history(
    session: AsyncSession, user_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None
) -> list[Rental]:
    stmt = select(Rental).where(Rental.user_id == user_id)
    if before is not None:
        stmt = stmt.where(tuple_(Rental.requested_at, Rental.id) < tuple_(*before))
    stmt = stmt.order_by(Rental.requested_at.desc(), Rental.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def stale_unlocking(session: AsyncSession, older_than: datetime, *, limit: int = 100) -> list[Rental]:
    """Unlocking rentals requested before `older_than`, locked (others' locked rows are skipped)."""
    stmt = (
        select(Rental)
        .where(Rental.state == RentalState.UNLOCKING.value, Rental.requested_at < older_than)
        .order_by(Rental.requested_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def lock_bank(session: AsyncSession, bank_id: str) -> None:
    """Serialize everything that starts or ends a rental of this bank, until the transaction ends
    (the eject and the return of one bank arrive on different topics, through different consumers)."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"bank:{bank_id}"))))


async def unpaid_for_user(session: AsyncSession, user_id: UUID) -> list[Rental]:
    stmt = (
        select(Rental)
        .where(Rental.user_id == user_id, Rental.state == RentalState.UNPAID.value)
        .order_by(Rental.requested_at)
    )
    return list((await session.execute(stmt)).scalars())


async def store_unmatched_return(
    session: AsyncSession,
    *,
    report_id: str,
    bank_id: str,
    cabinet_id: str,
    returned_at: datetime,
    received_at: datetime,
) -> None:
    stmt = (
        insert(UnmatchedReturn)
        .values(
            report_id=report_id,
            bank_id=bank_id,
            cabinet_id=cabinet_id,
            returned_at=returned_at,
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["report_id"])
    )
    await session.execute(stmt)


async def unmatched_return_for(session: AsyncSession, rental: Rental) -> UnmatchedReturn | None:
    """The earliest stored return of the rental's bank that happened during the rental: received
    after it was requested and, by the device's clock, not before the eject."""
    assert rental.bank_id is not None
    assert rental.started_at is not None
    stmt = (
        select(UnmatchedReturn)
        .where(
            UnmatchedReturn.bank_id == rental.bank_id,
            UnmatchedReturn.rental_id.is_(None),
            UnmatchedReturn.received_at >= rental.requested_at,
            UnmatchedReturn.returned_at >= rental.started_at,
        )
        .order_by(UnmatchedReturn.returned_at, UnmatchedReturn.report_id)
        .limit(1)
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def banks_with_matchable_returns(session: AsyncSession, *, limit: int = 100) -> list[str]:
    """Banks in an active rental that have a stored return which happened during that rental."""
    stmt = (
        select(Rental.bank_id)
        .join(UnmatchedReturn, UnmatchedReturn.bank_id == Rental.bank_id)
        .where(
            Rental.state == RentalState.ACTIVE.value,
            UnmatchedReturn.rental_id.is_(None),
            UnmatchedReturn.received_at >= Rental.requested_at,
            UnmatchedReturn.returned_at >= Rental.started_at,
        )
        .distinct()
        .limit(limit)
    )
    return [b for b in (await session.execute(stmt)).scalars() if b is not None]


async def active_with_ceiling(session: AsyncSession, *, limit: int) -> list[Rental]:
    stmt = (
        select(Rental)
        .where(Rental.state == RentalState.ACTIVE.value, Rental.purchase_ceiling_fen.is_not(None))
        .order_by(Rental.started_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def purchased_since(session: AsyncSession, bank_id: str, since: datetime) -> Rental | None:
    """The latest rental of this bank that ended sold to its user at or after `since`."""
    stmt = (
        select(Rental)
        .where(Rental.bank_id == bank_id, Rental.purchased, Rental.ended_at >= since)
        .order_by(Rental.ended_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()
