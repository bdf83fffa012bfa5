"""Rental business rules: borrow request, device outcomes, return and fee, payment outcome.

Never commits: callers hold the unit of work (SessionDep, the kit's consumer, or `borrow.py`).
Every transition is guarded by the rental's current state, so a replayed or late event is a no-op.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc import lifecycle
from billing_svc.models import Rental, RentalState
from billing_svc.prices import service as prices
from billing_svc.pricing import Price, compute_fee
from billing_svc.rentals import repository
from billing_svc.rentals.errors import (
    ActiveRentalExists,
    BorrowRefused,
    CreditTooLow,
    DepositRequired,
    IdempotencyKeyReused,
    InsufficientBalance,
    NothingToPay,
    PaymentPending,
    RentalNotFound,
    UnlocksBusy,
    UnpaidDebt,
    WalletUnavailable,
)
from billing_svc.rentals.schemas import BankPosition
from billing_svc.rentals.waiters import OUTCOME_CHANNEL, RentalWaiters
from billing_svc.settings import Settings
from billing_svc.users import UserIsBlocked
from contracts.events import (
    BankEjected,
    BankReturned,
    ChargeFailed,
    ChargeRequested,
    ChargeSettled,
    EjectBank,
    EjectFailed,
    EjectFailureReason,
    PriceSnapshot,
    RentalEnded,
    RentalFailed,
    RentalStarted,
)
from kit.app import Runtime
from kit.db import after_commit
from kit.pg_listen import notify

log = logging.getLogger(__name__)

BORROWS_SHED = Counter("pb_billing_borrows_shed_total", "Borrows refused 503 busy (load shedding), nothing ejected")

# charge_id = uuid5(CHARGE_NAMESPACE, str(rental_id)): one rental can never produce two charges.
CHARGE_NAMESPACE = UUID("6f1c8a52-3d5e-5b8e-9a57-0c1b2d3e4f50")


def charge_id_for(rental_id: UUID, attempt: int = 0) -> UUID:
    """Attempt 0 is the charge requested when the rental ended; each manual payment of an unpaid
    rental is a new attempt (asset-credit-svc settles at most one charge per rental)."""
    if attempt == 0:
        return uuid.uuid5(CHARGE_NAMESPACE, str(rental_id))
    return uuid.uuid5(CHARGE_NAMESPACE, f"{rental_id}:{attempt}")


def now_utc() -> datetime:
    return datetime.now(UTC)


def current_price(settings: Settings) -> Price:
    """The service's default price (when no pricing plan applies)."""
    return prices.default_price(settings)


def price_of(rental: Rental) -> Price:
    return Price(
        period_minutes=rental.period_minutes,
        price_per_period_fen=rental.price_per_period_fen,
        free_minutes=rental.free_minutes,
        daily_cap_fen=rental.daily_cap_fen,
        purchase_ceiling_fen=rental.purchase_ceiling_fen,
    )


def snapshot(price: Price) -> PriceSnapshot:
    return PriceSnapshot(
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
        purchase_ceiling_fen=price.purchase_ceiling_fen,
    )


def elapsed_seconds(rental: Rental, at: datetime) -> int:
    """Seconds the meter ran: from start to end (or to `at` while active); 0 before the eject."""
    if rental.started_at is None:
        return 0
    end = rental.ended_at or at
    return max(0, int((end - rental.started_at).total_seconds()))


def waiters_of(runtime: Runtime) -> RentalWaiters:
    waiters: RentalWaiters = runtime.extras["rental_waiters"]
    return waiters


def admit_borrow(runtime: Runtime) -> None:
    """Shed load before anything starts when the unlocks already in flight show a lagging pipeline."""
    settings, waiters = settings_of(runtime), waiters_of(runtime)
    if len(waiters) >= settings.max_borrows_waiting or waiters.oldest_wait_s() > settings.shed_borrows_after_wait_s:
        log.warning("borrow shed", extra={"waiting": len(waiters), "oldest_wait_s": round(waiters.oldest_wait_s(), 2)})
        BORROWS_SHED.inc()
        raise UnlocksBusy(retry_after_s=2)


def eject_deadline(settings: Settings, *, budget_left_s: float) -> datetime:
    """The EjectBank command's deadline: `eject_deadline_s` from now, but never so late that the outcome
    of an eject at the deadline has less than `eject_answer_grace_s` of the borrow's budget left to reach
    us (slow checks before this point shorten it). Too little left for a device to answer: 503 busy,
    nothing started."""
    window_s = min(settings.eject_deadline_s, budget_left_s - settings.eject_answer_grace_s)
    if window_s < settings.min_eject_window_s:
        log.warning("borrow shed: too little of its budget left", extra={"budget_left_s": round(budget_left_s, 2)})
        BORROWS_SHED.inc()
        raise UnlocksBusy(retry_after_s=2)
    return now_utc() + timedelta(seconds=window_s)


def settings_of(runtime: Runtime) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


# ---- borrow ---------------------------------------------------------------------------------


async def replay(session: AsyncSession, user_id: UUID, key: str | None, code: str) -> Rental | None:
    """The rental an earlier request with the same Idempotency-Key created, if any."""
    if key is None:
        return None
    rental = await repository.by_idempotency_key(session, user_id, key)
    if rental is not None and rental.code != code:
        raise IdempotencyKeyReused(rental_id=str(rental.id))
    return rental


async def check_borrower(
    session: AsyncSession, settings: Settings, user_id: UUID, key: str | None, code: str
) -> Rental | None:
    """The rental an earlier request with the same Idempotency-Key created (its answer is replayed, whatever
    changed since); else refuse a blocked user (403), a second open rental (409) and unpaid rentals (402
    unpaid_debt: paid by POST /v1/rentals/{id}/payments). One read of the database (`repository.borrower`)."""
    found = await repository.borrower(session, user_id, key)
    if found.same_key is not None:
        if found.same_key.code != code:
            raise IdempotencyKeyReused(rental_id=str(found.same_key.id))
        return found.same_key
    if found.access_status == "blocked":
        raise UserIsBlocked()
    if settings.one_active_rental_per_user and found.open is not None:
        raise ActiveRentalExists(rental_id=str(found.open.id))
    if found.unpaid:
        raise UnpaidDebt(
            debt_fen=sum(r.fee_fen or 0 for r in found.unpaid),
            rental_ids=[str(r.id) for r in found.unpaid],
        )
    return None


async def bank_whereabouts(
    http: httpx.AsyncClient, settings: Settings, token: str, bank_id: str
) -> tuple[bool | None, BankPosition | None]:
    """The rented bank's last known position (6.1.9) from device-svc (GET /v1/banks/rented-by-me with the
    user's own token, so device-svc applies the user's consent and shows only their own bank). Returns
    (consent, position); (None, None) when device-svc does not answer in time: the rental is shown anyway."""
    url = f"{settings.device_svc_url.rstrip('/')}/v1/banks/rented-by-me"
    try:
        response = await http.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=settings.position_timeout_s
        )
    except httpx.HTTPError as exc:
        log.warning("bank position unavailable", extra={"error": repr(exc), "url": url})
        return None, None
    if response.status_code != 200:
        return None, None
    try:
        answer = response.json()
        if answer.get("bank_id") != bank_id:
            return None, None
        consent = bool(answer.get("position_consent"))
        where = answer.get("position")
        position = BankPosition.model_validate(where) if where else None
    except (ValueError, AttributeError, ValidationError):
        log.warning("rented bank answer unreadable", extra={"body": response.text[:200]})
        return None, None
    return consent, position if consent else None


async def check_balance(http: httpx.AsyncClient, settings: Settings, token: str) -> None:
    """Ask asset-credit-svc for the user's balance (GET /v1/wallet with the user's token), and
    whether credit and deposit allow borrowing (`borrow_refusal`: credit_too_low 403,
    deposit_required 402)."""
    url = f"{settings.asset_svc_url.rstrip('/')}/v1/wallet"
    try:
        response = await http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=settings.wallet_timeout_s)
    except httpx.HTTPError as exc:
        log.warning("wallet check failed", extra={"error": repr(exc), "url": url})
        raise WalletUnavailable() from None
    if response.status_code == 404:  # no wallet yet: nothing on it
        balance = 0
    elif response.status_code == 200:
        try:
            answer = response.json()
            balance = int(answer["balance_fen"])
        except (ValueError, KeyError, TypeError):
            log.warning("wallet answer without a balance_fen", extra={"body": response.text[:200]})
            raise WalletUnavailable() from None
        refusal = answer.get("borrow_refusal") if isinstance(answer, dict) else None
        if refusal:  # credit and deposit rules (asset-credit-svc decides, billing enforces)
            detail = answer.get("borrow_refusal_detail") or None
            refused = {"credit_too_low": CreditTooLow, "deposit_required": DepositRequired}.get(refusal, BorrowRefused)
            raise refused(detail if isinstance(detail, str) else None, credit_score=answer.get("credit_score"))
    else:
        log.warning("wallet check refused", extra={"status": response.status_code, "body": response.text[:200]})
        raise WalletUnavailable()
    if balance < settings.min_balance_to_borrow_fen:
        raise InsufficientBalance(balance_fen=balance, min_balance_fen=settings.min_balance_to_borrow_fen)


async def request_rental(
    session: AsyncSession,
    runtime: Runtime,
    *,
    rental_id: UUID,
    user_id: UUID,
    code: str,
    idempotency_key: str | None,
    deadline: datetime,
) -> Rental:
    """Insert the rental `unlocking` and the EjectBank command (due by `deadline`) in the caller's transaction."""
    settings = settings_of(runtime)
    price, plan = await prices.price_for_code(session, settings, code)
    requested_at = now_utc()
    rental = Rental(
        id=rental_id,
        user_id=user_id,
        code=code,
        state=lifecycle.INITIAL.value,
        command_id=uuid.uuid4(),
        idempotency_key=idempotency_key,
        user_exclusive=settings.one_active_rental_per_user,
        requested_at=requested_at,
        eject_deadline=deadline,
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
        purchase_ceiling_fen=price.purchase_ceiling_fen,
        plan_id=plan.id if plan else None,
    )
    await repository.add(session, rental)
    command = EjectBank(
        command_id=rental.command_id,
        rental_id=rental.id,
        user_id=user_id,
        code=code,
        deadline=rental.eject_deadline,
    )
    await runtime.publish(session, command, key=code)
    log.info("rental requested", extra={"rental_id": str(rental.id), "code": code})
    return rental


# ---- device outcomes ------------------------------------------------------------------------


async def on_bank_ejected(session: AsyncSession, runtime: Runtime, data: BankEjected) -> None:
    await repository.lock_bank(session, data.bank_id)
    rental = await repository.get(session, data.rental_id, for_update=True)
    if rental is None:
        log.warning("bank ejected for an unknown rental", extra={"rental_id": str(data.rental_id)})
        return
    if rental.command_id != data.command_id:
        log.error(
            "bank ejected for a command this rental did not send",
            extra={"rental_id": str(rental.id), "command_id": str(data.command_id)},
        )
        return
    if rental.state == RentalState.FAILED.value:
        await revive_failed_rental(session, runtime, rental, data)
        return
    if rental.state != RentalState.UNLOCKING.value:
        if rental.state == RentalState.ACTIVE.value and rental.bank_id == data.bank_id:
            return  # the same outcome again
        log.error(
            "bank ejected for a rental that is not unlocking; ignored",
            extra={
                "rental_id": str(rental.id),
                "state": rental.state,
                "bank_id": data.bank_id,
                "cabinet_id": data.cabinet_id,
                "ejected_at": data.ejected_at.isoformat(),
            },
        )
        return
    await _start(session, runtime, rental, data)
    log.info("rental started", extra={"rental_id": str(rental.id), "bank_id": data.bank_id})
    await _wake(session, runtime, rental.id)


async def revive_failed_rental(session: AsyncSession, runtime: Runtime, rental: Rental, data: BankEjected) -> None:
    """Compensation for a late eject (clause 7.1): the borrow was answered as failed (no device
    answer in time, expired command, ...) but the cabinet did eject the bank, so the user holds it.
    The rental becomes active at the device's eject time, so the bank is tracked until it is back,
    but it is free (`end_rental`): the user was told no bank came out and that nothing is charged.
    Only a bank never returned is still sold at the purchase ceiling. RentalStarted tells the user.
    If the user already started another rental meanwhile, this one stops counting for the
    one-open-rental rule."""
    other = await repository.open_for_user(session, rental.user_id)
    if other is not None and other.id != rental.id:
        rental.user_exclusive = False
    log.error(
        "late eject for a failed rental; the user holds the bank, so the rental becomes active",
        extra={
            "rental_id": str(rental.id),
            "failure_reason": rental.failure_reason,
            "bank_id": data.bank_id,
            "ejected_at": data.ejected_at.isoformat(),
        },
    )
    rental.revived_at = now_utc()
    await _start(session, runtime, rental, data)


async def _start(session: AsyncSession, runtime: Runtime, rental: Rental, data: BankEjected) -> None:
    # The device just took this bank out of a slot, so any rental still holding it was returned
    # without a report reaching us: close it at the latest instant we know it was back.
    stale = await repository.active_for_bank(session, data.bank_id)
    if stale is not None and stale.id != rental.id:
        log.error(
            "bank ejected while still in another active rental; closing that one",
            extra={"rental_id": str(stale.id), "new_rental_id": str(rental.id), "bank_id": data.bank_id},
        )
        await end_rental(
            session, runtime, stale, ended_at=data.ejected_at, return_cabinet_id=data.cabinet_id, report_id=None
        )
    lifecycle.move(rental, RentalState.ACTIVE)
    rental.failure_reason = None
    rental.started_at = data.ejected_at
    rental.bank_id = data.bank_id
    rental.bank_model = data.bank_model
    rental.start_cabinet_id = data.cabinet_id
    rental.slot = data.slot
    rental.region_code = data.region.division_code if data.region else None
    await session.flush()
    await runtime.publish(
        session,
        RentalStarted(
            rental_id=rental.id,
            user_id=rental.user_id,
            bank_id=data.bank_id,
            cabinet_id=data.cabinet_id,
            slot=data.slot,
            started_at=data.ejected_at,
            price=snapshot(price_of(rental)),
            after_failure=rental.revived_at is not None,
        ),
        key=str(rental.id),
    )
    # A return report of this bank may have overtaken the eject event (another topic).
    await match_stored_return(session, runtime, rental)


async def match_stored_return(session: AsyncSession, runtime: Runtime, rental: Rental) -> bool:
    """End an active rental with a stored return report that happened during it, if any.
    The caller holds the bank's lock."""
    stored = await repository.unmatched_return_for(session, rental)
    if stored is None:
        return False
    log.warning(
        "a stored return report ends the rental (the report overtook the eject event)",
        extra={"rental_id": str(rental.id), "report_id": stored.report_id, "bank_id": stored.bank_id},
    )
    stored.rental_id = rental.id
    await end_rental(
        session,
        runtime,
        rental,
        ended_at=stored.returned_at,
        return_cabinet_id=stored.cabinet_id,
        report_id=stored.report_id,
    )
    return True


async def reconcile_returns(session: AsyncSession, runtime: Runtime) -> int:
    """The reconciliation job: close active rentals whose bank has a stored return report from
    during the rental (a race between the two consumers, or a report that arrived out of order),
    at the device's return time. Returns how many rentals it closed."""
    closed = 0
    for bank_id in await repository.banks_with_matchable_returns(session):
        await repository.lock_bank(session, bank_id)
        rental = await repository.active_for_bank(session, bank_id)
        if rental is not None and await match_stored_return(session, runtime, rental):
            closed += 1
    return closed


async def on_eject_failed(session: AsyncSession, runtime: Runtime, data: EjectFailed) -> None:
    rental = await repository.get(session, data.rental_id, for_update=True)
    if rental is None:
        log.warning("eject failed for an unknown rental", extra={"rental_id": str(data.rental_id)})
        return
    if rental.command_id != data.command_id:
        log.error(
            "eject failure for a command this rental did not send",
            extra={"rental_id": str(rental.id), "command_id": str(data.command_id)},
        )
        return
    if rental.state != RentalState.UNLOCKING.value:
        if rental.state != RentalState.FAILED.value:
            log.error(
                "eject failure for a rental that is not unlocking; ignored",
                extra={"rental_id": str(rental.id), "state": rental.state, "reason": data.reason.value},
            )
        return
    settings = settings_of(runtime)
    answer_by = rental.requested_at + timedelta(seconds=settings.borrow_answer_budget_s)
    if data.reason == EjectFailureReason.DEVICE_NO_ANSWER and now_utc() < answer_by:
        # device-svc gave up at the deadline, but the cabinet's answer may still be on its way (queued in
        # device-svc's intake behind bulk traffic): the waiting borrow decides at its budget's end
        # (give_up_waiting), so an eject that arrives before then is answered with the rental.
        log.info(
            "device-svc saw no answer by the deadline; the waiting borrow decides",
            extra={"rental_id": str(rental.id)},
        )
        return
    if data.bank_id is not None:
        rental.bank_id = data.bank_id
    if data.cabinet_id is not None:
        rental.start_cabinet_id = data.cabinet_id
    await fail_rental(session, runtime, rental, data.reason)


async def fail_rental(session: AsyncSession, runtime: Runtime, rental: Rental, reason: EjectFailureReason) -> None:
    at = now_utc()
    lifecycle.move(rental, RentalState.FAILED)
    rental.failure_reason = reason.value
    rental.ended_at = None
    await session.flush()
    await runtime.publish(
        session, RentalFailed(rental_id=rental.id, user_id=rental.user_id, reason=reason, at=at), key=str(rental.id)
    )
    log.info("rental failed", extra={"rental_id": str(rental.id), "reason": reason.value})
    await _wake(session, runtime, rental.id)


async def give_up_waiting(session: AsyncSession, runtime: Runtime, rental_id: UUID) -> Rental:
    """The end of a borrow's wait: the one place its answer is decided when no outcome came. Under the
    rental's row lock (the consumers applying device outcomes take it too): a rental still `unlocking`
    fails with device_no_answer, committed before the user hears it; one that left `unlocking` meanwhile
    is answered as it is."""
    rental = await repository.get(session, rental_id, for_update=True)
    assert rental is not None
    await session.refresh(rental)
    if rental.state == RentalState.UNLOCKING.value:
        log.warning("no device answer within the borrow's budget; failing it", extra={"rental_id": str(rental.id)})
        await fail_rental(session, runtime, rental, EjectFailureReason.DEVICE_NO_ANSWER)
    return rental


async def expire_unlocking(session: AsyncSession, runtime: Runtime, older_than: datetime) -> int:
    """Fail rentals that never got a device answer, so their users are not blocked forever."""
    stale = await repository.stale_unlocking(session, older_than)
    for rental in stale:
        log.warning("no device answer for the rental; failing it", extra={"rental_id": str(rental.id)})
        await fail_rental(session, runtime, rental, EjectFailureReason.DEVICE_NO_ANSWER)
    return len(stale)


async def _wake(session: AsyncSession, runtime: Runtime, rental_id: UUID) -> None:
    """Wake the borrow waiting for this rental once the transaction commits: this instance's at once,
    every other instance's by the NOTIFY the commit sends."""
    waiters = waiters_of(runtime)
    after_commit(session, lambda: waiters.notify(rental_id))
    await notify(session, OUTCOME_CHANNEL, str(rental_id))


# ---- return and charge ----------------------------------------------------------------------


async def on_bank_returned(session: AsyncSession, runtime: Runtime, data: BankReturned) -> bool:
    """Ends the bank's active rental at the device's return time; False when there is none (the report
    is kept for a later match)."""
    await repository.lock_bank(session, data.bank_id)
    rental = await repository.active_for_bank(session, data.bank_id)
    if rental is None:
        # Maybe the eject event of its rental has not arrived yet (it travels on another topic):
        # keep the report; the eject handler and the reconciliation sweep look for it.
        log.info(
            "bank returned with no active rental; report kept for a later match",
            extra={"bank_id": data.bank_id, "report_id": data.report_id, "cabinet_id": data.cabinet_id},
        )
        await repository.store_unmatched_return(
            session,
            report_id=data.report_id,
            bank_id=data.bank_id,
            cabinet_id=data.cabinet_id,
            returned_at=data.returned_at,
            received_at=data.received_at,
        )
        return False
    await end_rental(
        session,
        runtime,
        rental,
        ended_at=data.returned_at,
        return_cabinet_id=data.cabinet_id,
        report_id=data.report_id,
    )
    return True


async def end_rental(
    session: AsyncSession,
    runtime: Runtime,
    rental: Rental,
    *,
    ended_at: datetime,
    return_cabinet_id: str,
    report_id: str | None,
) -> None:
    """Stop the meter at `ended_at` (never before the start), compute the fee, request the charge."""
    assert rental.started_at is not None
    assert rental.bank_id is not None
    ended_at = max(ended_at, rental.started_at)
    duration = int((ended_at - rental.started_at).total_seconds())
    # A revived rental was answered (and announced) as failed and not charged: it stays free, unless the
    # bank was never returned and is sold at the purchase ceiling.
    waived = rental.revived_at is not None and not rental.purchased
    fee = 0 if waived else compute_fee(duration, price_of(rental))
    rental.ended_at = ended_at
    rental.duration_seconds = duration
    rental.fee_fen = fee
    rental.return_cabinet_id = return_cabinet_id
    rental.returned_report_id = report_id
    lifecycle.move(rental, RentalState.ENDED if fee > 0 else RentalState.SETTLED)
    if fee > 0:
        rental.charge_id = charge_id_for(rental.id)
    await session.flush()
    await runtime.publish(
        session,
        RentalEnded(
            rental_id=rental.id,
            user_id=rental.user_id,
            bank_id=rental.bank_id,
            start_cabinet_id=rental.start_cabinet_id or "",
            return_cabinet_id=return_cabinet_id,
            started_at=rental.started_at,
            ended_at=ended_at,
            duration_seconds=duration,
            fee_fen=fee,
            purchased=rental.purchased,
        ),
        key=str(rental.id),
    )
    if rental.charge_id is not None:
        await runtime.publish(
            session,
            charge_request(rental),
            key=str(rental.user_id),
        )
    log.info(
        "rental ended",
        extra={"rental_id": str(rental.id), "duration_seconds": duration, "fee_fen": fee, "report_id": report_id},
    )


def charge_request(rental: Rental) -> ChargeRequested:
    """The charge of the rental's current fee, with its timing (a card of free minutes needs it)."""
    assert rental.charge_id is not None
    assert rental.fee_fen is not None
    return ChargeRequested(
        charge_id=rental.charge_id,
        rental_id=rental.id,
        user_id=rental.user_id,
        amount_fen=rental.fee_fen,
        started_at=rental.started_at,
        ended_at=rental.ended_at,
        duration_seconds=rental.duration_seconds,
        region_code=rental.region_code,
    )


async def on_charge_settled(session: AsyncSession, data: ChargeSettled) -> None:
    # An earlier attempt may settle after a later one was requested: the user paid the debt through a channel
    # (asset-credit settles the attempt that failed) while asking billing to pay it from the wallet. The rental
    # is collected either way (asset-credit collects a rental once; the later attempt fails `rental_already_charged`).
    rental = await _charged_rental(session, data.rental_id, data.charge_id, any_attempt=True)
    if rental is None:
        return
    if rental.state in (RentalState.ENDED.value, RentalState.UNPAID.value):
        lifecycle.move(rental, RentalState.SETTLED)
        rental.card_fen = data.card_fen
        rental.coupon_fen = data.coupon_fen
        rental.red_packet_fen = data.red_packet_fen
        rental.paid_fen = data.amount_fen if data.paid_fen is None else data.paid_fen
        await session.flush()
        log.info(
            "rental settled",
            extra={
                "rental_id": str(rental.id),
                "amount_fen": data.amount_fen,
                "paid_fen": rental.paid_fen,
                "discount_fen": data.card_fen + data.coupon_fen + data.red_packet_fen,
            },
        )


async def on_charge_failed(session: AsyncSession, data: ChargeFailed) -> None:
    rental = await _charged_rental(session, data.rental_id, data.charge_id)
    if rental is None:
        return
    if rental.state == RentalState.ENDED.value:
        lifecycle.move(rental, RentalState.UNPAID)
        await session.flush()
        log.warning("rental unpaid", extra={"rental_id": str(rental.id), "reason": data.reason})


async def _charged_rental(
    session: AsyncSession, rental_id: UUID, charge_id: UUID, *, any_attempt: bool = False
) -> Rental | None:
    """The rental, locked, when `charge_id` is its current charge attempt (or, with `any_attempt`, any of them)."""
    rental = await repository.get(session, rental_id, for_update=True)
    attempts = range(rental.charge_attempt + 1) if rental is not None and any_attempt else ()
    known = rental is not None and (
        rental.charge_id == charge_id or any(charge_id_for(rental.id, k) == charge_id for k in attempts)
    )
    if rental is None or not known:
        log.warning(
            "payment outcome for an unknown charge; ignored",
            extra={"rental_id": str(rental_id), "charge_id": str(charge_id)},
        )
        return None
    return rental


async def pay_unpaid(session: AsyncSession, runtime: Runtime, user_id: UUID, rental_id: UUID) -> Rental:
    """The user pays an unpaid rental (after topping up): a new charge attempt for the fee.

    Idempotent by state: while that charge is pending, asking again changes nothing."""
    rental = await repository.get(session, rental_id, for_update=True)
    if rental is None or rental.user_id != user_id:
        raise RentalNotFound()
    if rental.state == RentalState.ENDED.value:
        raise PaymentPending(rental_id=str(rental.id))
    if rental.state != RentalState.UNPAID.value or not rental.fee_fen:
        raise NothingToPay(rental_id=str(rental.id), state=rental.state)
    await request_charge(session, runtime, rental)
    return rental


async def request_charge(session: AsyncSession, runtime: Runtime, rental: Rental) -> None:
    """A new charge attempt for the rental's (current) fee; the rental waits for its outcome."""
    assert rental.fee_fen is not None
    assert rental.fee_fen > 0
    rental.charge_attempt += 1
    rental.charge_id = charge_id_for(rental.id, rental.charge_attempt)
    lifecycle.move(rental, RentalState.ENDED)
    await session.flush()
    await runtime.publish(
        session,
        charge_request(rental),
        key=str(rental.user_id),
    )
    log.info(
        "charge requested again",
        extra={"rental_id": str(rental.id), "attempt": rental.charge_attempt, "fee_fen": rental.fee_fen},
    )


async def sell_unreturned(session: AsyncSession, runtime: Runtime, at: datetime, *, limit: int = 100) -> int:
    """Active rentals whose fee reached their plan's purchase ceiling: the bank is the user's now;
    the rental ends at `at`, charged exactly the ceiling. Returns how many."""
    sold = 0
    for rental in await repository.active_with_ceiling(session, limit=limit):
        assert rental.started_at is not None
        assert rental.bank_id is not None
        assert rental.purchase_ceiling_fen is not None
        if compute_fee(elapsed_seconds(rental, at), price_of(rental)) < rental.purchase_ceiling_fen:
            continue
        await repository.lock_bank(session, rental.bank_id)
        locked = await repository.get(session, rental.id, for_update=True)
        if locked is None or locked.state != RentalState.ACTIVE.value:
            continue
        await session.refresh(locked)
        locked.purchased = True
        log.warning("bank not returned by its purchase ceiling; sold to the user", extra={"rental_id": str(rental.id)})
        await end_rental(session, runtime, locked, ended_at=at, return_cabinet_id="", report_id=None)
        sold += 1
    return sold
