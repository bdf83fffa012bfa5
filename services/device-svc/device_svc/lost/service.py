"""Banks sold to their user (billing ended the rental `purchased` at its purchase ceiling) leave the fleet
as `lost`. Not an operator's hold: if the bank ever comes back, the cabinet's return or slot snapshot
puts it in service again (and billing buys it back, docs/money.md)."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import RentalEnded
from device_svc.ops import repository as ops
from device_svc.registry import repository as registry

log = logging.getLogger(__name__)


async def on_rental_ended(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, RentalEnded)
    if not data.purchased:
        return
    bank = await registry.get_bank(session, data.bank_id, for_update=True)
    if bank is None or bank.state != "rented":
        # Back already (its return overtook the sale) or never ours: nothing is lost.
        log.info("purchased bank not marked lost", extra={"bank_id": data.bank_id, "state": bank and bank.state})
        return
    await ops.set_transition_reason(session, f"sold to its user at the purchase ceiling (rental {data.rental_id})")
    bank.state = "lost"
    bank.state_changed_at = max(bank.state_changed_at, data.ended_at)
    bank.operator_hold = False
    await session.flush()
    log.warning("bank sold to its user; marked lost", extra={"bank_id": bank.id, "rental_id": str(data.rental_id)})
