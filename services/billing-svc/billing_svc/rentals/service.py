"""Rental business rules: borrow request, device outcomes, return and fee, payment outcome.

Never commits: callers hold the unit of work (SessionDep, the kit's consumer, or `borrow.py`).
Every transition is guarded by the rental's current state, so a replayed or late event is a no-op.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc.models import Rental, RentalState
from billing_svc.pricing import Price, compute_fee
from billing_svc.rentals import repository
from billing_svc.rentals.errors import ActiveRentalExists, IdempotencyKeyReused, InsufficientBalance, WalletUnavailable
from billing_svc.rentals.waiters import RentalWaiters
from billing_svc.settings import Settings
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

log = logging.getLogger(__name__)

# charge_id = uuid5(CHARGE_NAMESPACE, str(rental_id)): one rental can never produce two charges.
CHARGE_NAMESPACE = UUID("6f1c8a52-3d5e-5b8e-9a57-0c1b2d3e4f50")


def charge_id_for(rental_id: UUID) -> UUID:
    return uuid.uuid5(CHARGE_NAMESPACE, str(rental_id))


def now_utc() -> datetime:
    return datetime.now(UTC)


def current_price(settings: Settings) -> Price:
    return Price(
        period_minutes=settings.period_minutes,
        price_per_period_fen=settings.price_per_period_fen,
        free_minutes=settings.free_minutes,
        daily_cap_fen=settings.daily_cap_fen,
    )


def price_of(rental: Rental) -> Price:
    return Price(
        period_minutes=rental.period_minutes,
        price_per_period_fen=rental.price_per_period_fen,
        free_minutes=rental.free_minutes,
        daily_cap_fen=rental.daily_cap_fen,
    )


def snapshot(price: Price) -> PriceSnapshot:
    return PriceSnapshot(
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
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


async def ensure_no_open_rental(session: AsyncSession, settings: Settings, user_id: UUID) -> None:
    if not settings.one_active_rental_per_user:
        return
    rental = await repository.open_for_user(session, user_id)
    if rental is not None:
        raise ActiveRentalExists(rental_id=str(rental.id))


async def check_balance(http: httpx.AsyncClient, settings: Settings, token: str) -> None:
    """Ask asset-credit-svc for the user's balance (GET /v1/wallet with the user's token)."""
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
            balance = int(response.json()["balance_fen"])
        except (ValueError, KeyError, TypeError):
            log.warning("wallet answer without a balance_fen", extra={"body": response.text[:200]})
            raise WalletUnavailable() from None
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
) -> Rental:
    """Insert the rental `unlocking` and the EjectBank command in the caller's transaction."""
    settings = settings_of(runtime)
    price = current_price(settings)
    requested_at = now_utc()
    rental = Rental(
        id=rental_id,
        user_id=user_id,
        code=code,
        state=RentalState.UNLOCKING.value,
        command_id=uuid.uuid4(),
        idempotency_key=idempotency_key,
        user_exclusive=settings.one_active_rental_per_user,
        requested_at=requested_at,
        eject_deadline=requested_at + timedelta(seconds=settings.eject_deadline_s),
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
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
    if rental.state != RentalState.UNLOCKING.value:
        if rental.state == RentalState.ACTIVE.value and rental.bank_id == data.bank_id:
            return  # the same outcome again
        # A late eject after the rental was failed (or a contradictory report): the user may hold
        # a bank without a running rental. Compensation is a later issue; make it loud.
        log.error(
            "bank ejected for a rental that is not unlocking",
            extra={
                "rental_id": str(rental.id),
                "state": rental.state,
                "bank_id": data.bank_id,
                "cabinet_id": data.cabinet_id,
                "ejected_at": data.ejected_at.isoformat(),
            },
        )
        return
    # The device just took this bank out of a slot, so any rental still holding it was returned
    # without a report reaching us: close it at the latest instant we know it was back.
    stale = await repository.active_for_bank(session, data.bank_id)
    if stale is not None:
        log.error(
            "bank ejected while still in another active rental; closing that one",
            extra={"rental_id": str(stale.id), "new_rental_id": str(rental.id), "bank_id": data.bank_id},
        )
        await end_rental(
            session, runtime, stale, ended_at=data.ejected_at, return_cabinet_id=data.cabinet_id, report_id=None
        )
    rental.state = RentalState.ACTIVE.value
    rental.started_at = data.ejected_at
    rental.bank_id = data.bank_id
    rental.start_cabinet_id = data.cabinet_id
    rental.slot = data.slot
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
        ),
        key=str(rental.id),
    )
    log.info("rental started", extra={"rental_id": str(rental.id), "bank_id": data.bank_id})
    _wake(session, runtime, rental.id)


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
    if data.bank_id is not None:
        rental.bank_id = data.bank_id
    if data.cabinet_id is not None:
        rental.start_cabinet_id = data.cabinet_id
    await fail_rental(session, runtime, rental, data.reason)


async def fail_rental(session: AsyncSession, runtime: Runtime, rental: Rental, reason: EjectFailureReason) -> None:
    at = now_utc()
    rental.state = RentalState.FAILED.value
    rental.failure_reason = reason.value
    rental.ended_at = None
    await session.flush()
    await runtime.publish(
        session, RentalFailed(rental_id=rental.id, user_id=rental.user_id, reason=reason, at=at), key=str(rental.id)
    )
    log.info("rental failed", extra={"rental_id": str(rental.id), "reason": reason.value})
    _wake(session, runtime, rental.id)


async def expire_unlocking(session: AsyncSession, runtime: Runtime, older_than: datetime) -> int:
    """Fail rentals that never got a device answer, so their users are not blocked forever."""
    stale = await repository.stale_unlocking(session, older_than)
    for rental in stale:
        log.warning("no device answer for the rental; failing it", extra={"rental_id": str(rental.id)})
        await fail_rental(session, runtime, rental, EjectFailureReason.DEVICE_NO_ANSWER)
    return len(stale)


def _wake(session: AsyncSession, runtime: Runtime, rental_id: UUID) -> None:
    waiters = waiters_of(runtime)
    after_commit(session, lambda: waiters.notify(rental_id))


# ---- return and charge ----------------------------------------------------------------------


async def on_bank_returned(session: AsyncSession, runtime: Runtime, data: BankReturned) -> None:
    rental = await repository.active_for_bank(session, data.bank_id)
    if rental is None:
        log.info(
            "bank returned with no active rental; ignored",
            extra={"bank_id": data.bank_id, "report_id": data.report_id, "cabinet_id": data.cabinet_id},
        )
        return
    await end_rental(
        session,
        runtime,
        rental,
        ended_at=data.returned_at,
        return_cabinet_id=data.cabinet_id,
        report_id=data.report_id,
    )


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
    fee = compute_fee(duration, price_of(rental))
    rental.ended_at = ended_at
    rental.duration_seconds = duration
    rental.fee_fen = fee
    rental.return_cabinet_id = return_cabinet_id
    rental.returned_report_id = report_id
    rental.state = RentalState.ENDED.value if fee > 0 else RentalState.SETTLED.value
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
        ),
        key=str(rental.id),
    )
    if rental.charge_id is not None:
        await runtime.publish(
            session,
            ChargeRequested(charge_id=rental.charge_id, rental_id=rental.id, user_id=rental.user_id, amount_fen=fee),
            key=str(rental.user_id),
        )
    log.info(
        "rental ended",
        extra={"rental_id": str(rental.id), "duration_seconds": duration, "fee_fen": fee, "report_id": report_id},
    )


async def on_charge_settled(session: AsyncSession, data: ChargeSettled) -> None:
    rental = await _charged_rental(session, data.rental_id, data.charge_id)
    if rental is None:
        return
    if rental.state in (RentalState.ENDED.value, RentalState.UNPAID.value):
        rental.state = RentalState.SETTLED.value
        await session.flush()
        log.info("rental settled", extra={"rental_id": str(rental.id), "amount_fen": data.amount_fen})


async def on_charge_failed(session: AsyncSession, data: ChargeFailed) -> None:
    rental = await _charged_rental(session, data.rental_id, data.charge_id)
    if rental is None:
        return
    if rental.state == RentalState.ENDED.value:
        rental.state = RentalState.UNPAID.value
        await session.flush()
        log.warning("rental unpaid", extra={"rental_id": str(rental.id), "reason": data.reason})


async def _charged_rental(session: AsyncSession, rental_id: UUID, charge_id: UUID) -> Rental | None:
    rental = await repository.get(session, rental_id, for_update=True)
    if rental is None or rental.charge_id != charge_id:
        log.warning(
            "payment outcome for an unknown charge; ignored",
            extra={"rental_id": str(rental_id), "charge_id": str(charge_id)},
        )
        return None
    return rental
