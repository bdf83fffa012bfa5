from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query

from billing_svc.models import OPEN_STATES, Rental
from billing_svc.pricing import compute_fee
from billing_svc.rentals import borrow as borrow_workflow
from billing_svc.rentals import repository, service
from billing_svc.rentals.errors import NoActiveRental, RentalNotFound
from billing_svc.rentals.schemas import BorrowRequest, CurrentRentalOut, RentalOut, RentalPage
from kit.app import RuntimeDep
from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.pagination import decode_cursor, encode_cursor
from kit.ratelimit import rate_class

router = APIRouter(tags=["rentals"], dependencies=[user_scope("rentals")])

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description="Same key, same answer"),
]


def to_out(rental: Rental) -> RentalOut:
    return RentalOut(
        rental_id=rental.id,
        state=rental.state,
        code=rental.code,
        bank_id=rental.bank_id,
        bank_model=rental.bank_model,
        cabinet_id=rental.start_cabinet_id,
        slot=rental.slot,
        return_cabinet_id=rental.return_cabinet_id,
        requested_at=rental.requested_at,
        started_at=rental.started_at,
        ended_at=rental.ended_at,
        duration_seconds=rental.duration_seconds,
        fee_fen=rental.fee_fen,
        failure_reason=rental.failure_reason,
        price=service.snapshot(service.price_of(rental)),
        purchased=rental.purchased,
        card_fen=rental.card_fen or 0,
        coupon_fen=rental.coupon_fen or 0,
        red_packet_fen=rental.red_packet_fen or 0,
        discount_fen=(rental.card_fen or 0) + (rental.coupon_fen or 0) + (rental.red_packet_fen or 0),
        paid_fen=rental.paid_fen,
    )


@router.post(
    "/v1/rentals",
    status_code=201,
    dependencies=[rate_class("borrow")],
    responses={
        402: {"description": "insufficient_balance"},
        404: {"description": "unknown_code"},
        409: {"description": "active_rental_exists, bank_battery_low, bank_faulty, bank_not_available, ..."},
        502: {"description": "eject_failed, motor_fault, bank_not_present, command_expired"},
        503: {"description": "wallet_unavailable, cabinet_offline"},
        504: {"description": "device_no_answer"},
    },
)
async def borrow(
    body: BorrowRequest, user: CurrentUser, runtime: RuntimeDep, idempotency_key: IdempotencyKey = None
) -> RentalOut:
    """Borrow a bank: answers within 5 s with the active rental or the reason no bank came out."""
    rental = await borrow_workflow.borrow(runtime, user, body.code, idempotency_key)
    return to_out(rental)


@router.get("/v1/rentals/current")
async def current_rental(user: CurrentUser, session: ReadSessionDep, runtime: RuntimeDep) -> CurrentRentalOut:
    """The open rental, its running fee and, with the user's consent, where the bank was last reported."""
    rental = await repository.open_for_user(session, user.user_id)
    if rental is None or rental.state not in OPEN_STATES:
        raise NoActiveRental()
    elapsed = service.elapsed_seconds(rental, service.now_utc())
    running_fee = compute_fee(elapsed, service.price_of(rental)) if rental.started_at is not None else 0
    consent, position = None, None
    if rental.state == "active" and rental.bank_id:
        consent, position = await service.bank_whereabouts(
            runtime.http, service.settings_of(runtime), user.token, rental.bank_id
        )
    return CurrentRentalOut(
        **to_out(rental).model_dump(),
        elapsed_seconds=elapsed,
        running_fee_fen=running_fee,
        position_consent=consent,
        bank_position=position,
    )


HISTORY_PAGE_MAX = 100  # a larger page is a 422, as on every list (tests/architecture: test_page_sizes)


@router.get("/v1/rentals")
async def rental_history(
    user: CurrentUser,
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RentalPage:
    """The user's rentals, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = await repository.history(session, user.user_id, limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].requested_at, rows[-1].id) if more and rows else None
    return RentalPage(items=[to_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/v1/rentals/{rental_id}/payments", status_code=202)
async def pay_rental(rental_id: UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> RentalOut:
    """Pay an unpaid rental from the balance (top up first): a new charge for its fee. The rental
    is `ended` until the payment's outcome arrives, then `settled` (or `unpaid` again)."""
    return to_out(await service.pay_unpaid(session, runtime, user.user_id, rental_id))


@router.get("/v1/rentals/{rental_id}")
async def get_rental(rental_id: UUID, user: CurrentUser, session: ReadSessionDep) -> RentalOut:
    rental = await repository.get_own(session, user.user_id, rental_id)
    if rental is None:
        raise RentalNotFound()
    return to_out(rental)
