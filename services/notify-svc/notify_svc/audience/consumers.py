"""The audience projection's handlers: other services' facts about users, kept for campaign segments.
The kit records each event id in the same transaction as the upsert (idempotent consumer)."""

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import (
    BankEjected,
    BankReturned,
    CouponChanged,
    CreditChanged,
    RentalEnded,
    RentalStarted,
    UserDeregistered,
    UserRegistered,
)
from notify_svc.audience import repository as repo


async def on_user_registered(session: AsyncSession, envelope: Envelope) -> None:
    assert isinstance(envelope.data, UserRegistered)
    await repo.registered(session, envelope.data.user_id, envelope.data.registered_at)


async def on_user_deregistered(session: AsyncSession, envelope: Envelope) -> None:
    assert isinstance(envelope.data, UserDeregistered)
    await repo.deregistered(session, envelope.data.user_id, envelope.data.at)
    await repo.erase_personal_data(session, envelope.data.user_id)


async def on_rental_started(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalStarted)
    await repo.active(session, data.user_id, data.started_at, data.cabinet_id)


async def on_rental_ended(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalEnded)
    await repo.active(session, data.user_id, data.ended_at, data.return_cabinet_id)


async def on_bank_moved(session: AsyncSession, envelope: Envelope) -> None:
    """An eject or a return names its cabinet's division: remember it for the rentals there."""
    data = envelope.data
    assert isinstance(data, BankEjected | BankReturned)
    if data.region is not None and data.region.division_code is not None:
        await repo.cabinet_region(session, data.cabinet_id, data.region.division_code)


async def on_credit_changed(session: AsyncSession, envelope: Envelope) -> None:
    assert isinstance(envelope.data, CreditChanged)
    await repo.credit(session, envelope.data.user_id, envelope.data.level, envelope.data.at)


async def on_coupon_changed(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, CouponChanged)
    await repo.coupon(session, data.asset_id, data.user_id, data.status.value, data.expires_at, data.at)
