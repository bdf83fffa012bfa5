"""Events that put a message in a user's inbox. The kit records each event id in the same
transaction; the unique `source_event_id` keeps a redelivery from making a second message."""

import logging
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import (
    BankFaultCleared,
    ChargeFailed,
    ChargeSettled,
    DisputeOpened,
    DisputeResolved,
    RefundSettled,
    RentalEnded,
    RentalFailed,
    RentalStarted,
    VasFeeFailed,
    VasFeeRefunded,
    VasFeeSettled,
)
from kit.app import Runtime
from kit.periodic import Alarm
from notify_svc import texts
from notify_svc.messages.service import deliver
from notify_svc.tickets import service as tickets
from notify_svc.vas import repository as vas_repo
from notify_svc.vas import service as vas

log = logging.getLogger(__name__)


class InboxConsumers:
    """The handlers; `pushes` wakes the push worker once a message (and its push job) is committed."""

    def __init__(self, pushes: Alarm | None = None) -> None:
        self._pushes = pushes

    async def _deliver(self, session: AsyncSession, envelope: Envelope, text: texts.Text, user_id: UUID) -> None:
        created = await deliver(session, user_id, text, source_event_id=envelope.event_id, pushes=self._pushes)
        log.info(
            "message delivered" if created else "message already delivered",
            extra={"event_id": str(envelope.event_id), "type": envelope.type, "user_id": str(user_id)},
        )

    async def on_rental_ended(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, RentalEnded)
        await self._deliver(session, envelope, texts.rental_ended(envelope.data), envelope.data.user_id)

    async def on_rental_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, RentalFailed)
        await self._deliver(session, envelope, texts.rental_failed(envelope.data), envelope.data.user_id)

    async def on_charge_settled(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeSettled)
        await self._deliver(session, envelope, texts.charge_settled(envelope.data), envelope.data.user_id)

    async def on_charge_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeFailed)
        await self._deliver(session, envelope, texts.charge_failed(envelope.data), envelope.data.user_id)

    async def on_rental_started(self, session: AsyncSession, envelope: Envelope) -> None:
        """A normal start is answered in the app itself; only a rental revived by a late eject needs a message."""
        assert isinstance(envelope.data, RentalStarted)
        if envelope.data.after_failure:
            await self._deliver(session, envelope, texts.rental_revived(envelope.data), envelope.data.user_id)

    async def on_refund_settled(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, RefundSettled)
        await self._deliver(session, envelope, texts.refund_settled(envelope.data), envelope.data.user_id)

    async def on_bank_fault_cleared(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, BankFaultCleared)
        added = await tickets.note_fault_cleared(session, envelope.event_id, envelope.data)
        log.info("bank fault cleared noted", extra={"bank_id": envelope.data.bank_id, "tickets": added})


class VasPaymentConsumers:
    """asset-credit-svc's answer to a priced value-added service: paid, or withdrawn for the user (docs/service.md)."""

    def __init__(self, runtime: Runtime, pushes: Alarm | None = None) -> None:
        self._runtime = runtime
        self._pushes = pushes

    async def on_settled(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, VasFeeSettled)
        service = await vas.on_fee_settled(session, data)
        if service is not None:
            text = texts.vas_fee_settled(service.name, data.amount_fen, data.balance_fen)
            await deliver(session, data.user_id, text, source_event_id=envelope.event_id, pushes=self._pushes)

    async def on_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, VasFeeFailed)
        service = await vas.on_fee_failed(session, self._runtime, data)
        if service is not None:
            text = texts.vas_fee_failed(service.name, data.amount_fen)
            await deliver(session, data.user_id, text, source_event_id=envelope.event_id, pushes=self._pushes)

    async def on_refunded(self, session: AsyncSession, envelope: Envelope) -> None:
        """Finance gave a fee back: the consent's payment shows `refunded` and the user is told (once per event:
        the inbox keeps the source event id)."""
        data = envelope.data
        assert isinstance(data, VasFeeRefunded)
        await vas.on_fee_refunded(session, data)
        service = await vas_repo.service(session, data.service_code)
        name = service.name if service is not None else data.service_code
        text = texts.vas_fee_refunded(name, data.amount_fen, data.balance_fen)
        await deliver(session, data.user_id, text, source_event_id=envelope.event_id, pushes=self._pushes)


class DisputeConsumers:
    """billing-svc's disputes in the support queue: a ticket per dispute, resolved when billing settles it."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def on_opened(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, DisputeOpened)
        ticket = await tickets.open_for_dispute(session, self._runtime, envelope.data)
        log.info("dispute queued", extra={"dispute_id": str(envelope.data.dispute_id), "new": ticket is not None})

    async def on_resolved(self, session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, DisputeResolved)
        await tickets.dispute_resolved(session, self._runtime, envelope.data)
