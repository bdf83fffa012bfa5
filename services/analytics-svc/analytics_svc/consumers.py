"""Domain events into facts. The kit records each event id in the same transaction; the unique
business keys (rental id, user id, cabinet + report id) make each handler idempotent on its own."""

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import RentalFact, ReturnFact, UserFact
from contracts import Envelope
from contracts.events import BankReturned, RentalEnded, RentalStarted, UserRegistered


async def on_user_registered(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, UserRegistered)
    await session.execute(
        insert(UserFact).values(user_id=data.user_id, registered_at=data.registered_at).on_conflict_do_nothing()
    )


async def on_rental_started(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalStarted)
    stmt = insert(RentalFact).values(
        rental_id=data.rental_id,
        user_id=data.user_id,
        bank_id=data.bank_id,
        cabinet_id=data.cabinet_id,
        slot=data.slot,
        started_at=data.started_at,
    )
    # If `ended` was applied first, the fact exists already; only the slot is new.
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[RentalFact.rental_id],
            set_={"slot": stmt.excluded.slot},
            where=RentalFact.slot.is_(None),
        )
    )


async def on_rental_ended(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalEnded)
    stmt = insert(RentalFact).values(
        rental_id=data.rental_id,
        user_id=data.user_id,
        bank_id=data.bank_id,
        cabinet_id=data.start_cabinet_id,
        started_at=data.started_at,
        ended_at=data.ended_at,
        return_cabinet_id=data.return_cabinet_id,
        duration_seconds=data.duration_seconds,
        fee_fen=data.fee_fen,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[RentalFact.rental_id],
            set_={
                "ended_at": stmt.excluded.ended_at,
                "return_cabinet_id": stmt.excluded.return_cabinet_id,
                "duration_seconds": stmt.excluded.duration_seconds,
                "fee_fen": stmt.excluded.fee_fen,
            },
        )
    )


async def on_bank_returned(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, BankReturned)
    await session.execute(
        insert(ReturnFact)
        .values(
            report_id=data.report_id,
            bank_id=data.bank_id,
            cabinet_id=data.cabinet_id,
            slot=data.slot,
            battery_pct=data.battery_pct,
            returned_at=data.returned_at,
            clock_adjusted=data.clock_adjusted,
        )
        .on_conflict_do_nothing(constraint="uq_return_facts_cabinet_report")
    )
