"""Users dispute their rentals; support (permission rentals:support) corrects them, audited. Staff with
rentals:read see any user's rentals (the console's user view)."""

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from billing_svc.models import Dispute, Rental, RentalCorrection
from billing_svc.rentals import repository
from billing_svc.rentals.endpoints import to_out
from billing_svc.rentals.errors import RentalNotFound
from billing_svc.rentals.schemas import RentalOut, RentalPage
from billing_svc.support import service
from billing_svc.support.schemas import (
    CorrectionIn,
    CorrectionList,
    CorrectionOut,
    DisputeIn,
    DisputeList,
    DisputeOut,
    RejectIn,
)
from kit.app import RuntimeDep
from kit.audit import audited, row_state
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.idempotency import IdempotencyKey
from kit.pagination import decode_cursor, encode_cursor

router = APIRouter(tags=["disputes"])

Support = Annotated[Principal, Depends(require_permission("rentals:support"))]
RentalReader = Annotated[Principal, Depends(require_permission("rentals:read"))]


def dispute_out(d: Dispute) -> DisputeOut:
    return DisputeOut(
        dispute_id=d.id,
        rental_id=d.rental_id,
        user_id=d.user_id,
        reason=d.reason,
        state=d.state,
        resolution=d.resolution,
        created_at=d.created_at,
        resolved_at=d.resolved_at,
    )


def correction_out(c: RentalCorrection) -> CorrectionOut:
    return CorrectionOut(
        correction_id=c.id,
        rental_id=c.rental_id,
        dispute_id=c.dispute_id,
        actor=c.actor,
        action=c.action,
        note=c.note,
        before=c.before,
        after=c.after,
        refund_fen=c.refund_fen,
        refund_id=c.refund_id,
        created_at=c.created_at,
    )


@router.post("/v1/rentals/{rental_id}/disputes", status_code=201, dependencies=[user_scope("rentals")])
async def open_dispute(rental_id: UUID, body: DisputeIn, user: CurrentUser, session: SessionDep) -> DisputeOut:
    """Dispute one of your rentals (one open dispute per rental)."""
    return dispute_out(await service.open_dispute(session, user.user_id, rental_id, body.reason))


@router.get("/v1/rentals/{rental_id}/disputes", dependencies=[user_scope("rentals")])
async def my_disputes(rental_id: UUID, user: CurrentUser, session: SessionDep) -> DisputeList:
    if await repository.get_own(session, user.user_id, rental_id) is None:
        raise RentalNotFound()
    return DisputeList(items=[dispute_out(d) for d in await service.disputes_of_rental(session, rental_id)])


@router.get("/v1/admin/users/{user_id}/rentals")
async def rentals_of_user(
    user_id: UUID,
    _: RentalReader,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RentalPage:
    """One user's rentals, newest first (the same page as the user's own `GET /v1/rentals`)."""
    before = decode_cursor(cursor) if cursor else None
    rows = await repository.history(session, user_id, limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].requested_at, rows[-1].id) if more and rows else None
    return RentalPage(items=[to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/v1/admin/rentals/{rental_id}")
async def staff_rental(rental_id: UUID, _: RentalReader, session: ReadSessionDep) -> RentalOut:
    rental = await repository.get(session, rental_id)
    if rental is None:
        raise RentalNotFound()
    return to_out(rental)


@router.get("/v1/admin/disputes")
async def list_disputes(
    _: Support,
    session: SessionDep,
    state: Literal["open", "resolved", "rejected"] | None = "open",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DisputeList:
    return DisputeList(items=[dispute_out(d) for d in await service.list_disputes(session, state, limit)])


@router.post(
    "/v1/admin/disputes/{dispute_id}/reject",
    dependencies=[audited("dispute.reject", "dispute", "dispute_id", state=row_state(Dispute))],
)
async def reject_dispute(dispute_id: UUID, body: RejectIn, actor: Support, session: SessionDep) -> DisputeOut:
    return dispute_out(await service.reject_dispute(session, actor, dispute_id, body.note))


@router.post(
    "/v1/admin/rentals/{rental_id}/corrections",
    status_code=201,
    dependencies=[audited("rental.correct", "rental", "rental_id", state=row_state(Rental))],
)
async def correct_rental(
    rental_id: UUID,
    body: CorrectionIn,
    actor: Support,
    session: SessionDep,
    runtime: RuntimeDep,
    key: IdempotencyKey,
) -> CorrectionOut:
    """End an active rental at a time, or lower a finished rental's fee (refunding what was paid
    above it). Audited; the same Idempotency-Key replays the same correction."""
    correction = await service.correct(
        session,
        runtime,
        actor,
        rental_id,
        idempotency_key=key,
        note=body.note,
        fee_fen=body.fee_fen,
        ended_at=body.ended_at,
        dispute_id=body.dispute_id,
    )
    return correction_out(correction)


@router.get("/v1/admin/rentals/{rental_id}/corrections")
async def list_corrections(rental_id: UUID, _: Support, session: SessionDep) -> CorrectionList:
    return CorrectionList(items=[correction_out(c) for c in await service.corrections_of(session, rental_id)])
