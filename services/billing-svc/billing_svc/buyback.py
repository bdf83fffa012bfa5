"""Lost banks bought back: a bank sold to its user at the purchase ceiling (the rental ended
`purchased`) that comes back to a cabinet within `buyback_days` of the sale is taken back, and the
sale is undone except `buyback_fee_fen`: the rental's fee is lowered to that fee through the audited
support correction (so what the user paid above it is refunded to their wallet, discounts staying
applied, and an unpaid sale owes only the fee). Once per rental: the correction's idempotency key is
the rental's id. Never commits."""

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc.models import RentalState
from billing_svc.rentals import repository
from billing_svc.rentals import service as rentals
from billing_svc.support import service as support
from contracts.events import BankReturned
from kit.app import Runtime
from kit.auth import Principal

log = logging.getLogger(__name__)

BUYBACK_ACTOR = Principal(subject="system:lost-bank-buyback", kind="client", roles=frozenset({"system"}))


async def on_bank_returned(session: AsyncSession, runtime: Runtime, data: BankReturned) -> None:
    """Called for a return that ended no rental. The bank lock is already held (rentals.on_bank_returned)."""
    settings = rentals.settings_of(runtime)
    sold = await repository.purchased_since(
        session, data.bank_id, data.returned_at - timedelta(days=settings.buyback_days)
    )
    if sold is None:
        return
    if sold.ended_at is not None and sold.ended_at > data.returned_at:
        return  # a report from before the sale
    if sold.state == RentalState.ENDED.value:
        # The sale's charge is still being collected; the correction refuses then. Support corrects it
        # by hand (GET /v1/admin/rentals/{id}/corrections shows none) if this ever happens.
        log.warning("purchased bank returned while its charge is pending", extra={"rental_id": str(sold.id)})
        return
    fee = min(settings.buyback_fee_fen, sold.fee_fen or 0)
    correction = await support.correct(
        session,
        runtime,
        BUYBACK_ACTOR,
        sold.id,
        idempotency_key=f"buyback:{sold.id}",
        note=f"purchased bank {data.bank_id} returned at {data.cabinet_id}: purchase refunded minus the fee",
        fee_fen=fee,
        ended_at=None,
        dispute_id=None,
    )
    log.warning(
        "purchased bank returned; the purchase is refunded minus the fee",
        extra={"rental_id": str(sold.id), "bank_id": data.bank_id, "refund_fen": correction.refund_fen},
    )
