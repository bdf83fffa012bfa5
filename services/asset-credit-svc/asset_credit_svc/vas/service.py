"""Charging a priced value-added service (docs/service.md "Charging a priced service"): notify-svc keeps the
catalogue and the consents; an accepted consent with a price arrives here as notify.vas_consent.recorded and is
debited from the user's balance once per `consent_id`, as a ledger transaction of kind `vas_fee` (the balance to
platform revenue, the same double-entry posting and triggers as a rental fee). The answer goes back as
asset.vas_fee.settled or asset.vas_fee.failed. The balance only: no provider top-up and no coupons (a coupon
is for rentals); a user short of balance gets `insufficient_balance` and nothing is debited."""

import logging
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.models import TransactionKind, VasCharge
from contracts.events import VasConsentRecorded, VasFeeFailed, VasFeeRefunded, VasFeeSettled
from kit.app import Runtime
from kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

INSUFFICIENT_BALANCE = "insufficient_balance"


async def on_consent(session: AsyncSession, runtime: Runtime, data: VasConsentRecorded) -> str:
    """`settled`, `failed`, `duplicate`, or `free` (a withdrawal or a free service: nothing to charge)."""
    if data.action != "accepted" or not data.price_fen:
        return "free"
    now = datetime.now(UTC)
    claimed = (
        await session.execute(
            insert(VasCharge)
            .values(
                consent_id=data.consent_id,
                user_id=data.user_id,
                service_code=data.service_code,
                provider=data.provider,
                amount_fen=data.price_fen,
                status="failed",  # until the posting below succeeds, in this same transaction
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["consent_id"])
            .returning(VasCharge.consent_id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        log.info("value-added service consent already charged or refused", extra={"consent_id": data.consent_id})
        return "duplicate"
    wallet = ledger.user_balance(data.user_id)
    try:
        posted = await ledger.post(
            session,
            kind=TransactionKind.VAS_FEE.value,
            reference=f"vas:{data.consent_id}",
            legs=[(wallet, -data.price_fen), (ledger.PLATFORM_REVENUE, data.price_fen)],
        )
    except InsufficientFunds:
        await _record(session, data.consent_id, failure_reason=INSUFFICIENT_BALANCE)
        await runtime.publish(
            session,
            VasFeeFailed(
                consent_id=data.consent_id,
                user_id=data.user_id,
                service_code=data.service_code,
                amount_fen=data.price_fen,
                reason=INSUFFICIENT_BALANCE,
                at=now,
            ),
            key=str(data.user_id),
        )
        return "failed"
    if posted is None:  # cannot happen: the consent id was claimed above
        raise RuntimeError(f"value-added service consent {data.consent_id} claimed but already posted")
    balance_fen = posted.balance_after(wallet)
    await _record(session, data.consent_id, status="settled", balance_after_fen=balance_fen, transaction_id=posted.id)
    await runtime.publish(
        session,
        VasFeeSettled(
            consent_id=data.consent_id,
            user_id=data.user_id,
            service_code=data.service_code,
            amount_fen=data.price_fen,
            balance_fen=balance_fen,
            settled_at=now,
        ),
        key=str(data.user_id),
    )
    return "settled"


class VasChargeNotFound(NotFound):
    code = "vas_charge_not_found"
    title = "No value-added service fee was charged for this consent"


class VasChargeNotSettled(Conflict):
    code = "vas_charge_not_refundable"
    title = "Only a settled value-added service fee can be refunded, once"


async def refund(session: AsyncSession, runtime: Runtime, consent_id: int, reason: str, actor: str) -> VasCharge:
    """Give a settled fee back to the user's balance, once: platform revenue to the balance (`vas_refund`,
    reference `vas_refund:<consent_id>`), recorded on the charge and announced as asset.vas_fee.refunded."""
    charge = (
        await session.execute(select(VasCharge).where(VasCharge.consent_id == consent_id).with_for_update())
    ).scalar_one_or_none()
    if charge is None:
        raise VasChargeNotFound(f"Consent {consent_id} has no value-added service fee")
    if charge.status != "settled":
        raise VasChargeNotSettled(f"The fee of consent {consent_id} is {charge.status}")
    wallet = ledger.user_balance(charge.user_id)
    posted = await ledger.post(
        session,
        kind=TransactionKind.VAS_REFUND.value,
        reference=f"vas_refund:{consent_id}",
        legs=[(ledger.PLATFORM_REVENUE, -charge.amount_fen), (wallet, charge.amount_fen)],
    )
    if posted is None:  # cannot happen: the row is locked and was still settled
        raise RuntimeError(f"value-added service fee {consent_id} settled but its refund already posted")
    now = datetime.now(UTC)
    charge.status = "refunded"
    charge.refunded_at = now
    charge.refunded_by = actor
    charge.refund_reason = reason
    charge.refund_transaction_id = posted.id
    await runtime.publish(
        session,
        VasFeeRefunded(
            consent_id=consent_id,
            user_id=charge.user_id,
            service_code=charge.service_code,
            amount_fen=charge.amount_fen,
            balance_fen=posted.balance_after(wallet),
            reason=reason,
            refunded_at=now,
        ),
        key=str(charge.user_id),
    )
    log.info("value-added service fee refunded", extra={"consent_id": consent_id, "amount_fen": charge.amount_fen})
    return charge


async def _record(session: AsyncSession, consent_id: int, **values: object) -> None:
    await session.execute(update(VasCharge).where(VasCharge.consent_id == consent_id).values(**values))
