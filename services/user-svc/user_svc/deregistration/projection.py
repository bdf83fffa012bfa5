"""Rentals and their payment, projected from billing.rentals.v1, asset.payments.v1 and the waivers on
billing.charges.v1. The topics
are not ordered with each other, so every handler is an upsert that only moves a rental forward."""

from uuid import UUID

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope, Topic
from contracts.events import ChargeSettled, DebtWaived, RentalEnded, RentalFailed, RentalStarted
from kit.app import ConsumerSpec, Runtime
from user_svc.models import RentalObligation as R

_FINAL = ("ended", "failed")


async def on_rental_started(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalStarted)
    stmt = insert(R).values(rental_id=data.rental_id, user_id=data.user_id, state="active")
    stmt = stmt.on_conflict_do_update(
        index_elements=[R.rental_id], set_={"state": case((R.state.in_(_FINAL), R.state), else_="active")}
    )
    await session.execute(stmt)


async def on_rental_failed(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalFailed)
    stmt = insert(R).values(rental_id=data.rental_id, user_id=data.user_id, state="failed", paid=True)
    await session.execute(stmt.on_conflict_do_update(index_elements=[R.rental_id], set_={"state": "failed"}))


async def on_rental_ended(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalEnded)
    stmt = insert(R).values(
        rental_id=data.rental_id, user_id=data.user_id, state="ended", fee_fen=data.fee_fen, paid=data.fee_fen == 0
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[R.rental_id],
        set_={"state": "ended", "fee_fen": data.fee_fen, "paid": R.paid | (data.fee_fen == 0)},
    )
    await session.execute(stmt)


async def on_charge_settled(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, ChargeSettled)
    stmt = insert(R).values(rental_id=data.rental_id, user_id=data.user_id, state="unknown", paid=True)
    await session.execute(stmt.on_conflict_do_update(index_elements=[R.rental_id], set_={"paid": True}))


async def on_debt_waived(session: AsyncSession, envelope: Envelope) -> None:
    """Support waived the fee: the rental no longer counts as owed."""
    data = envelope.data
    assert isinstance(data, DebtWaived)
    stmt = insert(R).values(rental_id=data.rental_id, user_id=data.user_id, state="unknown", paid=True)
    await session.execute(stmt.on_conflict_do_update(index_elements=[R.rental_id], set_={"paid": True}))


def consumer_spec(_: Runtime) -> ConsumerSpec:
    return ConsumerSpec(
        topics=[Topic.RENTALS, Topic.PAYMENTS, Topic.CHARGES],
        handlers={
            "billing.rental.started": on_rental_started,
            "billing.rental.failed": on_rental_failed,
            "billing.rental.ended": on_rental_ended,
            "asset.charge.settled": on_charge_settled,
            "billing.debt.waived": on_debt_waived,
        },
        name="obligations",
        one_transaction_per_fetch=True,  # upserts of a projection: one transaction per fetch (issue 9)
    )


async def obligations(session: AsyncSession, user_id: UUID) -> tuple[int, int]:
    """(active rentals, unpaid fen) of a user."""
    stmt = select(
        func.count().filter(R.state == "active"),
        func.coalesce(func.sum(R.fee_fen).filter(R.state == "ended", R.paid.is_(False)), 0),
    ).where(R.user_id == user_id)
    active, unpaid = (await session.execute(stmt)).one()
    return int(active), int(unpaid)
