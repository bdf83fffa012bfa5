"""Event handlers. The kit runs each in one unit of work that also records the event id."""

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges import service as charges
from asset_credit_svc.credit import service as credit
from asset_credit_svc.deposit import service as deposits
from asset_credit_svc.refunds import service as refunds
from asset_credit_svc.settings import Settings
from asset_credit_svc.vas import service as vas
from asset_credit_svc.withdrawals import service as withdrawals
from contracts import Envelope
from contracts.events import (
    ChargeRequested,
    DebtWaived,
    RefundRequested,
    RentalEnded,
    RentalFailed,
    RentalStarted,
    UserDeregistered,
    VasConsentRecorded,
)
from kit.app import Runtime
from kit.kafka import Handler


def on_charge_requested(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeRequested)
        await charges.settle(session, runtime, envelope.data, envelope.event_id)

    return handle


def on_vas_consent(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, VasConsentRecorded)
        await vas.on_consent(session, runtime, envelope.data)

    return handle


def on_refund_requested(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, RefundRequested)
        await refunds.refund(session, runtime, envelope.data, envelope.event_id)

    return handle


def on_debt_waived(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DebtWaived)
        await deposits.waive(session, data.rental_id, data.user_id, data.waived_fen, data.at)
        assert isinstance(runtime.settings, Settings)
        await credit.on_debt_waived(session, runtime.settings, data.user_id, data.rental_id)

    return handle


def on_user_deregistered(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, UserDeregistered)
        await deposits.on_deregistered(session, runtime, envelope.data.user_id)
        await withdrawals.on_deregistered(session, runtime, envelope.data.user_id)

    return handle


def on_rental_event(runtime: Runtime) -> Handler:
    """Which users are renting (their deposit stays), and the credit rules of a finished rental:
    billing.rentals.v1, ordered per rental."""

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, RentalStarted | RentalEnded | RentalFailed)
        await deposits.track_rental(session, data.rental_id, data.user_id, open_=isinstance(data, RentalStarted))
        if isinstance(data, RentalEnded):
            assert isinstance(runtime.settings, Settings)
            await credit.on_rental_ended(session, runtime.settings, data)

    return handle
