"""Users' fault reports about banks (6.1.7, 6.2.2): a reported bank is not lent (a borrow of it answers
`bank_faulty`) and is a maintenance task until staff clear its reports, which tells notify-svc."""

import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import BankFaultCleared, BankFaultReported
from device_svc.faults import repository as repo
from device_svc.faults.schemas import Cleared
from device_svc.models import Bank
from device_svc.registry.service import BankNotFound
from kit.app import Runtime
from kit.errors import Conflict

log = logging.getLogger(__name__)


class NoOpenFaultReport(Conflict):
    code = "no_open_fault_report"
    title = "No user fault report about this bank is open"


async def on_fault_reported(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, BankFaultReported)
    recorded = await repo.add_report(
        session,
        ticket_id=data.ticket_id,
        bank_id=data.bank_id,
        kind=data.kind.value,
        user_id=data.user_id,
        cabinet_id=data.cabinet_id,
        at=data.at,
    )
    if not recorded:
        return
    if await repo.hold_bank(session, data.bank_id, data.at):
        log.warning("bank held: reported faulty by a user", extra={"bank_id": data.bank_id, "kind": data.kind.value})
    else:
        # Kept and listed for staff (a mistyped code); it holds nothing.
        log.warning("fault report about an unknown bank", extra={"bank_id": data.bank_id})


async def clear(session: AsyncSession, runtime: Runtime, bank_id: str, by: str, note: str) -> Cleared:
    if await session.get(Bank, bank_id) is None:
        raise BankNotFound(f"Bank {bank_id} is not registered")
    now = datetime.now(UTC)
    tickets = await repo.clear(session, bank_id, by, note, now)
    if not tickets:
        raise NoOpenFaultReport(f"Bank {bank_id} has no open fault report")
    await runtime.publish(
        session, BankFaultCleared(bank_id=bank_id, ticket_ids=tickets, by=by, note=note, at=now), key=bank_id
    )
    log.info("bank fault reports cleared", extra={"bank_id": bank_id, "tickets": len(tickets)})
    return Cleared(bank_id=bank_id, ticket_ids=tickets, cleared_at=now)
