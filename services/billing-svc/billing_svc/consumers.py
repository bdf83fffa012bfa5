"""Event handlers: one per consumed event type, bound to the runtime (for publishing and wake-ups).

The kit's consumer runs each in one unit of work that also records the event id, so a
redelivered event is a no-op; each handler is also idempotent by the rental's state."""

from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc import buyback
from billing_svc.rentals import service
from contracts import Envelope, Topic
from contracts.events import BankEjected, BankReturned, ChargeFailed, ChargeSettled, EjectFailed
from kit.app import ConsumerSpec, Runtime
from kit.kafka import Handler, LatencyClass


def consumer_specs(runtime: Runtime) -> list[ConsumerSpec]:
    async def on_bank_ejected(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, BankEjected)
        await service.on_bank_ejected(session, runtime, envelope.data)

    async def on_eject_failed(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, EjectFailed)
        await service.on_eject_failed(session, runtime, envelope.data)

    async def on_bank_returned(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, BankReturned)
        if not await service.on_bank_returned(session, runtime, envelope.data):
            await buyback.on_bank_returned(session, runtime, envelope.data)

    async def on_charge_settled(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeSettled)
        await service.on_charge_settled(session, envelope.data)

    async def on_charge_failed(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeFailed)
        await service.on_charge_failed(session, envelope.data)

    # Separate consumers: a slow payment backlog never delays an unlock answer.
    ejects: dict[str, Handler] = {"device.bank.ejected": on_bank_ejected, "device.eject.failed": on_eject_failed}
    returns: dict[str, Handler] = {"device.bank.returned": on_bank_returned}
    payments: dict[str, Handler] = {"asset.charge.settled": on_charge_settled, "asset.charge.failed": on_charge_failed}
    return [
        # A borrow request waits for the eject result; a return ends the fee.
        ConsumerSpec(topics=[Topic.DEVICE_EJECTS], handlers=ejects, name="ejects", latency=LatencyClass.CRITICAL),
        ConsumerSpec(topics=[Topic.DEVICE_RETURNS], handlers=returns, name="returns", latency=LatencyClass.CRITICAL),
        ConsumerSpec(topics=[Topic.PAYMENTS], handlers=payments, name="payments"),
    ]
