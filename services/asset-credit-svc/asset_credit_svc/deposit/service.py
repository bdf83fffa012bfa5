"""Deposit rules (clause 6.1.8/6.1.9). The deposit is a `user_deposit` ledger account:

- pay: an order `dep_<operation id>` at the chosen provider; its verified notification credits the
  deposit once (provider_clearing -> user_deposit). Refused while a deposit is held or being paid.
- refund: refused while the user is renting (billing.rentals.v1 says a rental is open) or owing
  (a charge failed or awaits the provider with nothing collected for its rental, and support did
  not waive that rental's debt: billing.debt.waived). The whole deposit
  is booked back to the provider (user_deposit -> provider_clearing) and the provider is asked to
  refund the paying order; until it confirms, the refund is `pending` and retried by the sweep.
- user.user.deregistered refunds it too (when not renting or owing; otherwise it stays, logged).

Every request is idempotent on (user, Idempotency-Key); the same key for another request is 409.
Never commits."""

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import and_, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges import service as charges
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.ledger.service import AccountRef
from asset_credit_svc.models import (
    AccountKind,
    Charge,
    ChargeStatus,
    DepositKind,
    DepositOperation,
    DepositStatus,
    OpenRental,
    TransactionKind,
    WaivedRental,
)
from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.providers import CreatedOrder, PaymentNotification, PaymentOrder, PaymentProviderError
from asset_credit_svc.payments.service import (
    AmountMismatch,
    ChannelMismatch,
    IdempotencyKeyReused,
    ProviderUnavailable,
    provider_for,
)
from contracts.events import DepositPaid, DepositRefunded, DepositRefundRequested
from kit.app import Runtime
from kit.db import after_commit, unit_of_work
from kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

DEPOSIT_ORDER_PREFIX = "dep_"
DEPOSIT_REFUND_PREFIX = "depr_"  # a deposit refund's number at the channel


class DepositHeld(Conflict):
    code = "deposit_held"
    title = "A deposit is already held or being paid"


class NoDeposit(Conflict):
    code = "no_deposit"
    title = "No deposit is held"


class Renting(Conflict):
    code = "renting"
    title = "The deposit cannot be refunded while a rental is in progress"


class Owing(Conflict):
    code = "owing"
    title = "The deposit cannot be refunded while a rental is unpaid"


class DepositOrderNotFound(NotFound):
    code = "deposit_order_not_found"
    title = "No deposit payment for this order"


class DepositNotPending(Conflict):
    code = "deposit_not_pending"
    title = "The deposit payment is no longer waiting for payment"


def deposit_account(user_id: uuid.UUID) -> AccountRef:
    return AccountRef(AccountKind.USER_DEPOSIT, user_id)


def is_deposit_order(out_trade_no: str) -> bool:
    return out_trade_no.startswith(DEPOSIT_ORDER_PREFIX)


def order_no(pay_id: uuid.UUID) -> str:
    return f"{DEPOSIT_ORDER_PREFIX}{pay_id}"


async def held_fen(session: AsyncSession, user_id: uuid.UUID) -> int:
    return await ledger.balance_of(session, deposit_account(user_id))


async def history(session: AsyncSession, user_id: uuid.UUID, limit: int) -> list[DepositOperation]:
    stmt = (
        select(DepositOperation)
        .where(DepositOperation.user_id == user_id)
        .order_by(DepositOperation.created_at.desc(), DepositOperation.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def _by_key(session: AsyncSession, user_id: uuid.UUID, key: str) -> DepositOperation | None:
    stmt = select(DepositOperation).where(DepositOperation.user_id == user_id, DepositOperation.idempotency_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def _claim(session: AsyncSession, values: dict[str, object]) -> bool:
    stmt = (
        insert(DepositOperation)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
        .returning(DepositOperation.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


# ---- pay ------------------------------------------------------------------------------------


async def pay(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, key: str, channel: str, amount_fen: int
) -> tuple[DepositOperation, bool]:
    provider = provider_for(charges.providers_of(runtime), channel)
    earlier = await _by_key(session, user_id, key)
    if earlier is None:
        pending = (
            await session.execute(
                select(DepositOperation.id).where(
                    DepositOperation.user_id == user_id,
                    DepositOperation.kind == DepositKind.PAY.value,
                    DepositOperation.status == DepositStatus.PENDING.value,
                )
            )
        ).first()
        if pending is not None or await held_fen(session, user_id) > 0:
            raise DepositHeld()
        await _claim(
            session,
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "idempotency_key": key,
                "kind": DepositKind.PAY.value,
                "amount_fen": amount_fen,
                "channel": channel,
                "status": DepositStatus.PENDING.value,
                "source": "user",
                "created_at": datetime.now(UTC),
            },
        )
    operation = await _by_key(session, user_id, key)
    assert operation is not None
    if operation.kind != DepositKind.PAY.value or operation.channel != channel:
        raise IdempotencyKeyReused("This Idempotency-Key was used for another deposit request")
    if operation.status == DepositStatus.PENDING.value:
        order = _order_of(operation)

        async def open_order() -> None:
            try:
                await provider.create_order(order)
            except Exception:
                log.exception("could not open the deposit order", extra={"deposit_id": str(operation.id)})

        after_commit(session, open_order)
    return operation, earlier is None


def _order_of(operation: DepositOperation) -> PaymentOrder:
    return PaymentOrder(
        out_trade_no=order_no(operation.id),
        amount_fen=operation.amount_fen,
        subject="Deposit",
        placed_at=operation.created_at,
    )


async def pay_params(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, payment_id: uuid.UUID
) -> tuple[DepositOperation, CreatedOrder]:
    """The channel's order of a pending deposit payment, for the user's app to pay (Alipay's order string,
    WeChat Pay's SDK parameters, UnionPay's form): the same order again, never a new one."""
    operation = await session.get(DepositOperation, payment_id)
    if operation is None or operation.user_id != user_id or operation.kind != DepositKind.PAY.value:
        raise DepositOrderNotFound()
    if operation.status != DepositStatus.PENDING.value:
        raise DepositNotPending()
    provider = provider_for(charges.providers_of(runtime), operation.channel)
    try:
        return operation, await provider.create_order(_order_of(operation))
    except PaymentProviderError as exc:
        log.warning(
            "the provider did not open the deposit order", extra={"deposit_id": str(payment_id), "error": str(exc)}
        )
        raise ProviderUnavailable() from None


async def resolve_stale_payments(session: AsyncSession, runtime: Runtime, older_than: datetime, limit: int = 50) -> int:
    """Deposit payments still pending since before `older_than` (their notification was lost) asked at their
    provider, as top-ups are (`payments.service.ask_provider`); a pending payment blocks a new one, so it must
    not wait forever. Never expired here: a deposit paid late would be a second one held."""
    stmt = (
        select(DepositOperation)
        .where(
            DepositOperation.kind == DepositKind.PAY.value,
            DepositOperation.status == DepositStatus.PENDING.value,
            DepositOperation.created_at < older_than,
        )
        .order_by(DepositOperation.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    resolved = 0
    for operation in (await session.execute(stmt)).scalars().all():
        provider = charges.providers_of(runtime).get(operation.channel)
        if provider is None:
            continue

        async def apply(notification: PaymentNotification, channel: str = operation.channel) -> str:
            return await apply_notification(session, runtime, channel, notification)

        outcome = await top_ups.ask_provider(session, provider, _order_of(operation), apply)
        resolved += outcome in ("succeeded", "failed")
    return resolved


async def apply_notification(
    session: AsyncSession, runtime: Runtime, channel: str, notification: PaymentNotification
) -> str:
    try:
        pay_id = uuid.UUID(notification.out_trade_no.removeprefix(DEPOSIT_ORDER_PREFIX))
    except ValueError:
        raise DepositOrderNotFound() from None
    stmt = (
        select(DepositOperation)
        .where(DepositOperation.id == pay_id, DepositOperation.kind == DepositKind.PAY.value)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    operation = (await session.execute(stmt)).scalar_one_or_none()
    if operation is None:
        raise DepositOrderNotFound()
    if operation.channel != channel:
        raise ChannelMismatch()
    if notification.amount_fen != operation.amount_fen:
        raise AmountMismatch()
    if operation.status != DepositStatus.PENDING.value:
        return "duplicate"
    operation.provider_trade_no = notification.trade_no
    operation.completed_at = datetime.now(UTC)
    if notification.status == "FAILED":
        operation.status = DepositStatus.FAILED.value
        operation.failure_reason = "declined"
        await session.flush()
        return "failed"
    posted = await ledger.post(
        session,
        kind=TransactionKind.DEPOSIT.value,
        reference=f"deposit:{operation.id}",
        legs=[
            (ledger.provider_clearing(channel), -operation.amount_fen),
            (deposit_account(operation.user_id), operation.amount_fen),
        ],
    )
    operation.status = DepositStatus.SUCCEEDED.value
    operation.transaction_id = posted.id if posted else None
    await runtime.publish(
        session,
        DepositPaid(
            deposit_id=operation.id,
            user_id=operation.user_id,
            amount_fen=operation.amount_fen,
            channel=channel,
            at=operation.completed_at,
        ),
        key=str(operation.user_id),
    )
    await session.flush()
    log.info("deposit paid", extra={"deposit_id": str(operation.id), "amount_fen": operation.amount_fen})
    return "succeeded"


# ---- refund ---------------------------------------------------------------------------------


async def refusal(session: AsyncSession, user_id: uuid.UUID) -> Renting | Owing | None:
    """Why the deposit cannot be refunded now, if it cannot."""
    renting = (
        await session.execute(
            select(OpenRental.rental_id).where(OpenRental.user_id == user_id, OpenRental.closed.is_(False)).limit(1)
        )
    ).first()
    if renting is not None:
        return Renting()
    settled = Charge.__table__.alias("settled")
    owing = (
        await session.execute(
            select(Charge.charge_id)
            .where(
                Charge.user_id == user_id,
                Charge.status.in_([ChargeStatus.FAILED.value, ChargeStatus.AWAITING_PROVIDER.value]),
                Charge.failure_reason.is_distinct_from(charges.ALREADY_CHARGED),
                ~exists().where(
                    and_(settled.c.rental_id == Charge.rental_id, settled.c.status == ChargeStatus.SETTLED.value)
                ),
                ~exists().where(WaivedRental.rental_id == Charge.rental_id),  # support waived the debt
            )
            .limit(1)
        )
    ).first()
    return Owing() if owing is not None else None


async def refund(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, key: str, source: str = "user"
) -> tuple[DepositOperation, bool]:
    earlier = await _by_key(session, user_id, key)
    if earlier is not None:
        if earlier.kind != DepositKind.REFUND.value:
            raise IdempotencyKeyReused("This Idempotency-Key was used for another deposit request")
        return earlier, False
    reason = await refusal(session, user_id)
    if reason is not None:
        raise reason
    held = await held_fen(session, user_id)
    if held <= 0:
        raise NoDeposit()
    paid = (
        await session.execute(
            select(DepositOperation)
            .where(
                DepositOperation.user_id == user_id,
                DepositOperation.kind == DepositKind.PAY.value,
                DepositOperation.status == DepositStatus.SUCCEEDED.value,
            )
            .order_by(DepositOperation.created_at.desc())
            .limit(1)
        )
    ).scalar_one()
    refund_id = uuid.uuid4()
    if not await _claim(
        session,
        {
            "id": refund_id,
            "user_id": user_id,
            "idempotency_key": key,
            "kind": DepositKind.REFUND.value,
            "amount_fen": held,
            "channel": paid.channel,
            "status": DepositStatus.PENDING.value,
            "pay_id": paid.id,
            "source": source,
            "created_at": datetime.now(UTC),
        },
    ):
        operation = await _by_key(session, user_id, key)  # a concurrent request with the same key
        assert operation is not None
        return operation, False
    try:
        posted = await ledger.post(
            session,
            kind=TransactionKind.DEPOSIT_REFUND.value,
            reference=f"deposit_refund:{refund_id}",
            legs=[(deposit_account(user_id), -held), (ledger.provider_clearing(paid.channel), held)],
        )
    except InsufficientFunds:  # a concurrent refund took it
        raise NoDeposit() from None
    operation = await session.get(DepositOperation, refund_id)
    assert operation is not None
    operation.transaction_id = posted.id if posted else None
    await runtime.publish(
        session,
        DepositRefundRequested(
            refund_id=operation.id,
            user_id=user_id,
            amount_fen=held,
            source=source,
            requested_at=operation.created_at,
        ),
        key=str(user_id),
    )
    await session.flush()
    _refund_after_commit(session, runtime, operation.id)
    log.info("deposit refund booked", extra={"deposit_id": str(refund_id), "amount_fen": held, "source": source})
    return operation, True


def _refund_after_commit(session: AsyncSession, runtime: Runtime, refund_id: uuid.UUID) -> None:
    async def ask_provider() -> None:
        try:
            async with unit_of_work(runtime.sessionmaker) as later:
                await confirm_refund(later, runtime, refund_id)
        except Exception:
            log.exception("deposit refund not confirmed; the sweep retries", extra={"deposit_id": str(refund_id)})

    after_commit(session, ask_provider)


async def confirm_refund(session: AsyncSession, runtime: Runtime, refund_id: uuid.UUID) -> bool:
    """Ask the provider to refund (idempotent on the refund id); True once it confirmed."""
    stmt = select(DepositOperation).where(DepositOperation.id == refund_id).with_for_update(skip_locked=True)
    operation = (await session.execute(stmt)).scalar_one_or_none()
    if operation is None or operation.status != DepositStatus.PENDING.value or operation.pay_id is None:
        return False
    provider = charges.providers_of(runtime).get(operation.channel)
    if provider is None:
        return False
    try:
        paid = await session.get(DepositOperation, operation.pay_id)
        await provider.refund(
            order_no(operation.pay_id),
            f"{DEPOSIT_REFUND_PREFIX}{operation.id}",
            operation.amount_fen,
            placed_at=paid.created_at if paid else None,
            refund_placed_at=operation.created_at,
        )
    except PaymentProviderError as exc:
        log.warning(
            "provider refused the deposit refund for now", extra={"deposit_id": str(refund_id), "error": str(exc)}
        )
        return False
    operation.status = DepositStatus.SUCCEEDED.value
    operation.completed_at = datetime.now(UTC)
    await runtime.publish(
        session,
        DepositRefunded(
            refund_id=operation.id,
            user_id=operation.user_id,
            amount_fen=operation.amount_fen,
            requested_at=operation.created_at,
            paid_at=operation.completed_at,
        ),
        key=str(operation.user_id),
    )
    await session.flush()
    return True


async def retry_pending_refunds(session: AsyncSession, runtime: Runtime, older_than: datetime) -> int:
    ids = (
        (
            await session.execute(
                select(DepositOperation.id).where(
                    DepositOperation.kind == DepositKind.REFUND.value,
                    DepositOperation.status == DepositStatus.PENDING.value,
                    DepositOperation.created_at < older_than,
                )
            )
        )
        .scalars()
        .all()
    )
    return sum([await confirm_refund(session, runtime, refund_id) for refund_id in ids])


# ---- events ---------------------------------------------------------------------------------


async def on_deregistered(session: AsyncSession, runtime: Runtime, user_id: uuid.UUID) -> None:
    try:
        async with session.begin_nested():  # a refusal leaves nothing of the attempt behind
            await refund(session, runtime, user_id=user_id, key="deregistered", source="deregistered")
    except NoDeposit:
        return
    except (Renting, Owing) as exc:
        log.warning(
            "user deregistered while renting or owing; the deposit stays",
            extra={"user_id": str(user_id), "code": exc.code},
        )


async def track_rental(session: AsyncSession, rental_id: uuid.UUID, user_id: uuid.UUID, *, open_: bool) -> None:
    stmt = insert(OpenRental).values(rental_id=rental_id, user_id=user_id, closed=not open_)
    await session.execute(stmt.on_conflict_do_update(index_elements=["rental_id"], set_={"closed": not open_}))


async def waive(session: AsyncSession, rental_id: uuid.UUID, user_id: uuid.UUID, waived_fen: int, at: datetime) -> None:
    """Support waived a rental's unpaid fee: it no longer counts as owing."""
    stmt = insert(WaivedRental).values(rental_id=rental_id, user_id=user_id, waived_fen=waived_fen, at=at)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["rental_id"]))
    log.info("rental debt waived", extra={"rental_id": str(rental_id), "waived_fen": waived_fen})
