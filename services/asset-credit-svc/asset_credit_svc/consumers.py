"""Event handlers. The kit runs each in one unit of work that also records the event id."""

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges import service as charges
from contracts import Envelope
from contracts.events import ChargeRequested
from kit.app import Runtime
from kit.kafka import Handler


def on_charge_requested(runtime: Runtime) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        assert isinstance(envelope.data, ChargeRequested)
        await charges.settle(session, runtime, envelope.data, envelope.event_id)

    return handle
