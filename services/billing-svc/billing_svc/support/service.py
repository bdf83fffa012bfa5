"""Disputes and corrections. A correction never raises a fee; lowering the fee of a paid rental
refunds what the user paid above the new fee (billing.refund.requested -> asset-credit-svc);
lowering an unpaid fee to zero waives the debt (billing.debt.waived, so asset-credit-svc no longer
counts it as owing). Every correction is an
append-only audit row (who, roles, when, why, before, after, refund) written in the same
transaction as the change and its events. Never commits."""

import logging
import uuid
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc import lifecycle
from billing_svc.models import Dispute, DisputeState, Rental, RentalCorrection, RentalState
from billing_svc.pricing import compute_fee
from billing_svc.rentals import repository
from billing_svc.rentals import service as rentals
from billing_svc.rentals.errors import IdempotencyKeyReused, PaymentPending, RentalNotFound
from contracts.events import DebtWaived, DisputeOpened, DisputeResolved, RefundRequested
from kit.app import Runtime
from kit.auth import Principal
from kit.errors import BusinessError, Conflict, NotFound
from kit.outbox import add_event

log = logging.getLogger(__name__)


class DisputeOpen(Conflict):
    code = "dispute_open"
    title = "This rental already has an open dispute"


class DisputeNotFound(NotFound):
    code = "dispute_not_found"
    title = "No such open dispute for this rental"


class NotDisputable(Conflict):
    code = "not_disputable"
    title = "This rental cannot be disputed (no bank was ejected)"


class NotCorrectable(Conflict):
    code = "not_correctable"
    title = "This correction does not apply to the rental in its current state"


class InvalidCorrection(BusinessError):
    status = 422
    code = "invalid_correction"
    title = "The correction is not valid"


def rental_facts(rental: Rental) -> dict[str, Any]:
    return {
        "state": rental.state,
        "started_at": rental.started_at.isoformat() if rental.started_at else None,
        "ended_at": rental.ended_at.isoformat() if rental.ended_at else None,
        "duration_seconds": rental.duration_seconds,
        "fee_fen": rental.fee_fen,
        "paid_fen": rental.paid_fen,
    }


# ---- disputes -------------------------------------------------------------------------------

PRODUCER = "billing-svc"  # the outbox's producer name for the dispute events written here


async def _resolved(session: AsyncSession, dispute: Dispute, outcome: Literal["rejected", "corrected"]) -> None:
    """The support queue (notify-svc's ticket of this dispute) learns the outcome."""
    assert dispute.resolved_at is not None
    assert dispute.resolved_by is not None
    event = DisputeResolved(
        dispute_id=dispute.id,
        rental_id=dispute.rental_id,
        user_id=dispute.user_id,
        outcome=outcome,
        note=(dispute.resolution or "")[:2000],
        by=dispute.resolved_by[:100],
        at=dispute.resolved_at,
    )
    await add_event(session, event, key=str(dispute.rental_id), producer=PRODUCER)


async def open_dispute(session: AsyncSession, user_id: UUID, rental_id: UUID, reason: str) -> Dispute:
    rental = await repository.get_own(session, user_id, rental_id)
    if rental is None:
        raise RentalNotFound()
    if rental.started_at is None:
        raise NotDisputable()
    inserted = (
        await session.execute(
            insert(Dispute)
            .values(
                id=uuid.uuid4(),
                rental_id=rental.id,
                user_id=user_id,
                reason=reason,
                state=DisputeState.OPEN.value,
                created_at=rentals.now_utc(),
            )
            .on_conflict_do_nothing(index_elements=["rental_id"], index_where=Dispute.state == "open")
            .returning(Dispute.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        raise DisputeOpen(rental_id=str(rental.id))
    log.info("rental disputed", extra={"rental_id": str(rental.id), "dispute_id": str(inserted)})
    opened = DisputeOpened(
        dispute_id=inserted, rental_id=rental.id, user_id=user_id, reason=reason, at=rentals.now_utc()
    )
    await add_event(session, opened, key=str(rental.id), producer=PRODUCER)
    dispute = await session.get(Dispute, inserted)
    assert dispute is not None
    return dispute


async def disputes_of_rental(session: AsyncSession, rental_id: UUID) -> list[Dispute]:
    stmt = select(Dispute).where(Dispute.rental_id == rental_id).order_by(Dispute.created_at)
    return list((await session.execute(stmt)).scalars())


async def list_disputes(session: AsyncSession, state: str | None, limit: int) -> list[Dispute]:
    stmt = select(Dispute).order_by(Dispute.created_at).limit(limit)
    if state is not None:
        stmt = stmt.where(Dispute.state == state)
    return list((await session.execute(stmt)).scalars())


async def _open_dispute_for_update(session: AsyncSession, rental_id: UUID, dispute_id: UUID) -> Dispute:
    stmt = (
        select(Dispute)
        .where(Dispute.id == dispute_id, Dispute.rental_id == rental_id, Dispute.state == DisputeState.OPEN.value)
        .with_for_update()
    )
    dispute = (await session.execute(stmt)).scalar_one_or_none()
    if dispute is None:
        raise DisputeNotFound()
    return dispute


async def reject_dispute(session: AsyncSession, actor: Principal, dispute_id: UUID, note: str) -> Dispute:
    dispute = (
        await session.execute(select(Dispute).where(Dispute.id == dispute_id).with_for_update())
    ).scalar_one_or_none()
    if dispute is None or dispute.state != DisputeState.OPEN.value:
        raise DisputeNotFound()
    dispute.state = DisputeState.REJECTED.value
    dispute.resolution = note
    dispute.resolved_by = actor.subject
    dispute.resolved_at = rentals.now_utc()
    await session.flush()
    log.info("dispute rejected", extra={"dispute_id": str(dispute.id), "actor": actor.subject})
    await _resolved(session, dispute, "rejected")
    return dispute


# ---- corrections ----------------------------------------------------------------------------


async def correct(
    session: AsyncSession,
    runtime: Runtime,
    actor: Principal,
    rental_id: UUID,
    *,
    idempotency_key: str,
    note: str,
    fee_fen: int | None,
    ended_at: datetime | None,
    dispute_id: UUID | None,
) -> RentalCorrection:
    """Apply one audited correction; the same key with the same request replays it."""
    earlier = (
        await session.execute(
            select(RentalCorrection).where(
                RentalCorrection.actor == actor.subject, RentalCorrection.idempotency_key == idempotency_key
            )
        )
    ).scalar_one_or_none()
    if earlier is not None:
        if earlier.rental_id != rental_id or earlier.note != note or earlier.dispute_id != dispute_id:
            raise IdempotencyKeyReused(correction_id=str(earlier.id))
        return earlier
    if fee_fen is None and ended_at is None:
        raise InvalidCorrection("Give fee_fen or ended_at")

    peek = await repository.get(session, rental_id)
    if peek is None:
        raise RentalNotFound()
    if peek.bank_id is not None:  # the same lock order as the device handlers: bank, then rental
        await repository.lock_bank(session, peek.bank_id)
    rental = await repository.get(session, rental_id, for_update=True)
    assert rental is not None
    await session.refresh(rental)
    dispute = await _open_dispute_for_update(session, rental.id, dispute_id) if dispute_id else None
    before = rental_facts(rental)
    refund_fen = 0
    refund_id: UUID | None = None

    if rental.state == RentalState.ACTIVE.value:
        if ended_at is None or fee_fen is not None:
            raise NotCorrectable("An active rental can only be ended at a given time (ended_at, no fee_fen)")
        assert rental.started_at is not None
        if ended_at > rentals.now_utc():
            raise InvalidCorrection("ended_at is in the future")
        action = "end_active"
        await rentals.end_rental(
            session, runtime, rental, ended_at=ended_at, return_cabinet_id="support-correction", report_id=None
        )
    elif rental.state in (RentalState.SETTLED.value, RentalState.UNPAID.value):
        assert rental.started_at is not None
        assert rental.ended_at is not None
        assert rental.fee_fen is not None
        new_fee = fee_fen
        if ended_at is not None:
            if not rental.started_at <= ended_at <= rental.ended_at:
                raise InvalidCorrection("ended_at must lie between the start and the recorded end")
            rental.ended_at = ended_at
            rental.duration_seconds = int((ended_at - rental.started_at).total_seconds())
            recomputed = compute_fee(rental.duration_seconds, rentals.price_of(rental))
            new_fee = recomputed if new_fee is None else min(new_fee, recomputed)
        assert new_fee is not None
        if new_fee > rental.fee_fen:
            raise InvalidCorrection("A correction never raises the fee", fee_fen=rental.fee_fen)
        action = "lower_fee"
        if rental.state == RentalState.SETTLED.value and rental.charge_id:
            # What coupons, cards and red packets covered stays applied; the user's money pays at
            # most what they do not cover of the new fee, and the rest of it is refunded.
            paid = rental.fee_fen if rental.paid_fen is None else rental.paid_fen
            covered = rental.card_fen + rental.coupon_fen + rental.red_packet_fen
            refund_fen = max(0, paid - max(0, new_fee - covered))
            rental.paid_fen = paid - refund_fen
        waived_fen = rental.fee_fen if rental.state == RentalState.UNPAID.value and new_fee == 0 else 0
        rental.fee_fen = new_fee
        if waived_fen:
            lifecycle.move(rental, RentalState.SETTLED)  # the debt is waived
            await runtime.publish(
                session,
                DebtWaived(rental_id=rental.id, user_id=rental.user_id, waived_fen=waived_fen, at=rentals.now_utc()),
                key=str(rental.user_id),
            )
        if refund_fen > 0:
            refund_id = uuid.uuid4()
            await runtime.publish(
                session,
                RefundRequested(
                    refund_id=refund_id,
                    rental_id=rental.id,
                    user_id=rental.user_id,
                    amount_fen=refund_fen,
                    reason=f"correction by {actor.subject}"[:200],
                ),
                key=str(rental.user_id),
            )
        await session.flush()
    elif rental.state == RentalState.ENDED.value:
        raise PaymentPending(rental_id=str(rental.id))
    else:
        raise NotCorrectable(state=rental.state)

    correction = RentalCorrection(
        id=uuid.uuid4(),
        rental_id=rental.id,
        dispute_id=dispute.id if dispute else None,
        actor=actor.subject,
        actor_roles=",".join(sorted(actor.roles))[:200],
        action=action,
        note=note,
        before=before,
        after=rental_facts(rental),
        refund_fen=refund_fen,
        refund_id=refund_id,
        idempotency_key=idempotency_key,
        created_at=rentals.now_utc(),
    )
    session.add(correction)
    if dispute is not None:
        dispute.state = DisputeState.RESOLVED.value
        dispute.resolution = note
        dispute.resolved_by = actor.subject
        dispute.resolved_at = rentals.now_utc()
        await _resolved(session, dispute, "corrected")
    await session.flush()
    log.warning(
        "rental corrected by support",
        extra={
            "rental_id": str(rental.id),
            "actor": actor.subject,
            "action": action,
            "refund_fen": refund_fen,
            "before": before,
            "after": correction.after,
        },
    )
    return correction


async def corrections_of(session: AsyncSession, rental_id: UUID) -> list[RentalCorrection]:
    stmt = select(RentalCorrection).where(RentalCorrection.rental_id == rental_id).order_by(RentalCorrection.created_at)
    return list((await session.execute(stmt)).scalars())
