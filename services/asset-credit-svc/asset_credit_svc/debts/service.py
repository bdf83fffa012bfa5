"""Paying a rental's unpaid fee through a channel (clause 6.1.5).

A charge the wallet cannot cover fails and the rental becomes a debt (billing: `unpaid`, which refuses new
borrows with 402 `unpaid_debt`). The user pays it through Alipay, WeChat Pay or a bank card: a payment
(`debt_payments`, order `debt_<id>`) for what the user's money has to pay of the fee (the fee less what their
coupons, cards and red packets cover now), opened at the channel; the app gets the channel's `pay_params`.

The channel's verified asynchronous notification, under the payment's row lock and in one transaction:
credits the wallet (`provider_payment`: provider_clearing -> user_balance) and collects the rental's last failed
charge from it (the ordinary settlement: assets first, then the balance), which publishes
`asset.charge.settled` for that charge, so billing moves the rental to `settled` and borrowing is open again.
A duplicate changes nothing. A decline or a payment never made leaves the payment `failed` and the rental owed
and payable again. Money that arrives when the rental is no longer owed (paid meanwhile from the balance, or
waived) stays in the wallet. Never commits.
"""

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.assets import service as assets
from asset_credit_svc.charges import service as charges
from asset_credit_svc.debts import repository
from asset_credit_svc.debts.repository import Debt
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.models import Charge, ChargeStatus, DebtPayment, DebtPaymentStatus, TransactionKind
from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.providers import (
    CreatedOrder,
    PaymentNotification,
    PaymentOrder,
    PaymentProviderError,
)
from asset_credit_svc.payments.service import (
    AmountMismatch,
    ChannelMismatch,
    IdempotencyKeyReused,
    ProviderUnavailable,
    provider_for,
)
from kit.app import Runtime
from kit.db import after_commit
from kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

DEBT_ORDER_PREFIX = "debt_"
DECLINED = "declined"
EXPIRED = "expired"  # not paid at the channel within `top_up_expire_after_s` (closed there where it can be)


class DebtNotFound(NotFound):
    code = "debt_not_found"
    title = "You owe nothing for this rental"


class DebtPaymentNotFound(NotFound):
    code = "debt_payment_not_found"
    title = "No such payment of a debt"


class DebtPaymentNotPending(Conflict):
    code = "debt_payment_not_pending"
    title = "The payment is no longer waiting to be paid"


class DebtCoveredByAssets(Conflict):
    code = "debt_covered_by_assets"
    title = "Your coupons, cards or red packets now cover this fee: pay it from the wallet"


def order_no(payment_id: uuid.UUID) -> str:
    return f"{DEBT_ORDER_PREFIX}{payment_id}"


def is_debt_order(out_trade_no: str) -> bool:
    return out_trade_no.startswith(DEBT_ORDER_PREFIX)


async def owed(session: AsyncSession, user_id: uuid.UUID) -> list[Debt]:
    return await repository.owed(session, user_id, charges.ALREADY_CHARGED)


async def payments(session: AsyncSession, user_id: uuid.UUID, limit: int) -> list[DebtPayment]:
    return await repository.of_user(session, user_id, limit)


async def get_payment(session: AsyncSession, user_id: uuid.UUID, payment_id: uuid.UUID) -> DebtPayment:
    payment = await repository.get(session, payment_id)
    if payment is None or payment.user_id != user_id:
        raise DebtPaymentNotFound()
    return payment


def _order_of(payment: DebtPayment) -> PaymentOrder:
    return PaymentOrder(
        out_trade_no=order_no(payment.id),
        amount_fen=payment.amount_fen,
        subject="Power bank rental fee",
        placed_at=payment.created_at,
    )


async def start_payment(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, key: str, rental_id: uuid.UUID, channel: str
) -> tuple[DebtPayment, bool]:
    """The payment for this Idempotency-Key, and whether this call made it. The channel's order is opened after
    the commit (`pay_params` answers it for the app)."""
    provider = provider_for(charges.providers_of(runtime), channel)
    earlier = await repository.by_key(session, user_id, key)
    if earlier is None:
        found = await repository.owed(session, user_id, charges.ALREADY_CHARGED, rental_id)
        if not found:
            raise DebtNotFound(rental_id=str(rental_id))
        debt = found[0]
        now = datetime.now(UTC)
        plan = await assets.plan_for_charge(session, user_id, debt.amount_fen, debt.duration_seconds, now)
        if plan.cash_fen <= 0:
            raise DebtCoveredByAssets(rental_id=str(rental_id))
        await repository.claim(
            session,
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "rental_id": rental_id,
                "idempotency_key": key,
                "channel": channel,
                "amount_fen": plan.cash_fen,
                "status": DebtPaymentStatus.PENDING.value,
                "created_at": now,
            },
        )
    payment = await repository.by_key(session, user_id, key)
    assert payment is not None
    if payment.rental_id != rental_id or payment.channel != channel:
        raise IdempotencyKeyReused("This Idempotency-Key was used for another payment")
    if payment.status == DebtPaymentStatus.PENDING.value:
        order = _order_of(payment)
        opened_for = str(payment.id)

        async def open_order() -> None:
            try:
                await provider.create_order(order)
            except Exception:  # `pay_params` opens it again when the app asks
                log.exception("could not open the order of a debt payment", extra={"debt_payment_id": opened_for})

        after_commit(session, open_order)
    log.info(
        "debt payment started",
        extra={"debt_payment_id": str(payment.id), "rental_id": str(rental_id), "channel": channel},
    )
    return payment, earlier is None


async def pay_params(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, payment_id: uuid.UUID
) -> tuple[DebtPayment, CreatedOrder]:
    """The channel's order of a pending payment, for the app (the same order again, never a new one)."""
    payment = await get_payment(session, user_id, payment_id)
    if payment.status != DebtPaymentStatus.PENDING.value:
        raise DebtPaymentNotPending(payment_status=payment.status)
    provider = provider_for(charges.providers_of(runtime), payment.channel)
    try:
        return payment, await provider.create_order(_order_of(payment))
    except PaymentProviderError as exc:
        log.warning(
            "the provider did not open a debt payment's order",
            extra={"debt_payment_id": str(payment_id), "error": str(exc)},
        )
        raise ProviderUnavailable() from None


async def apply_notification(
    session: AsyncSession, runtime: Runtime, channel: str, notification: PaymentNotification
) -> str:
    """A verified notification of a debt payment's order: `settled` (the rental paid), `credited` (the money is
    in the wallet, the rental no longer owed), `failed` or `duplicate`."""
    try:
        payment_id = uuid.UUID(notification.out_trade_no.removeprefix(DEBT_ORDER_PREFIX))
    except ValueError:
        raise DebtPaymentNotFound() from None
    payment = await repository.get(session, payment_id, for_update=True)
    if payment is None:
        raise DebtPaymentNotFound()
    if payment.channel != channel:
        raise ChannelMismatch()
    if notification.amount_fen != payment.amount_fen:
        log.error(
            "debt payment notification amount differs from the order",
            extra={
                "debt_payment_id": str(payment.id),
                "expected": payment.amount_fen,
                "notified": notification.amount_fen,
            },
        )
        raise AmountMismatch()
    return await _apply_outcome(session, runtime, payment, notification.status == "SUCCESS", notification.trade_no)


async def _apply_outcome(
    session: AsyncSession, runtime: Runtime, payment: DebtPayment, paid: bool, trade_no: str | None
) -> str:
    """The channel's outcome, under the payment's row lock."""
    if payment.status != DebtPaymentStatus.PENDING.value:
        # Given up on (expired), but the user paid at the channel after all: the money is taken in, once.
        late = paid and payment.status == DebtPaymentStatus.FAILED.value and payment.transaction_id is None
        if not late:
            if paid != (payment.status == DebtPaymentStatus.SUCCEEDED.value):
                log.error(
                    "channel outcome contradicts a final debt payment; ignored",
                    extra={"debt_payment_id": str(payment.id), "status": payment.status, "paid": paid},
                )
            return "duplicate"
    payment.provider_trade_no = trade_no
    payment.completed_at = datetime.now(UTC)
    if not paid:
        payment.status = DebtPaymentStatus.FAILED.value
        payment.failure_reason = DECLINED
        await session.flush()
        log.info("debt payment declined; the rental stays owed", extra={"debt_payment_id": str(payment.id)})
        return "failed"
    return await _take_in(session, runtime, payment)


def _owed_attempt(attempts: list[Charge]) -> Charge | None:
    """The rental's charge attempt a payment settles: the last one, when it failed for want of money and no
    attempt was collected."""
    if not attempts or repository.is_settled(attempts):
        return None
    last = attempts[0]
    if last.status != ChargeStatus.FAILED.value or last.failure_reason == charges.ALREADY_CHARGED:
        return None
    return last


async def _take_in(session: AsyncSession, runtime: Runtime, payment: DebtPayment) -> str:
    # Lock order as in every settlement: the rental's charges, the user's assets, then the ledger's accounts.
    attempts = await repository.lock_rental_charges(session, payment.rental_id)
    await assets.lock_spendable(session, payment.user_id, datetime.now(UTC))
    posted = await ledger.post(
        session,
        kind=TransactionKind.PROVIDER_PAYMENT.value,
        reference=f"debt_payment:{payment.id}",
        legs=[
            (ledger.provider_clearing(payment.channel), -payment.amount_fen),
            (ledger.user_balance(payment.user_id), payment.amount_fen),
        ],
    )
    if posted is None:  # cannot happen: the payment is taken in once, under its row lock
        raise RuntimeError(f"debt payment {payment.id} taken in twice")
    payment.status = DebtPaymentStatus.SUCCEEDED.value
    payment.failure_reason = None
    payment.transaction_id = posted.id
    await session.flush()
    target = None if await repository.is_waived(session, payment.rental_id) else _owed_attempt(attempts)
    if target is not None and await charges.settle_owed(session, runtime, target):
        payment.settled_charge_id = target.charge_id
        await session.flush()
        log.info(
            "rental debt paid through a channel",
            extra={"debt_payment_id": str(payment.id), "rental_id": str(payment.rental_id)},
        )
        return "settled"
    log.warning(
        "debt payment credited to the wallet: the rental is no longer owed, or the wallet cannot cover it now",
        extra={"debt_payment_id": str(payment.id), "rental_id": str(payment.rental_id)},
    )
    return "credited"


async def resolve_stale(
    session: AsyncSession, runtime: Runtime, *, older_than: datetime, expire_before: datetime, limit: int = 50
) -> int:
    """Pending payments whose notification has not come (lost, or the user never paid), asked at the channel as
    top-ups are (`payments.service.ask_provider`): paid or declined is applied as the notification would have
    been; one still unpaid after `expire_before` is closed at the channel where it can close orders and `failed`
    (`expired`), which leaves the rental payable (a payment that slips in after is still taken in). Returns how
    many were resolved."""
    resolved = 0
    for payment in await repository.stale_pending(session, older_than, limit):
        provider = charges.providers_of(runtime).get(payment.channel)
        if provider is None:
            continue

        async def apply(notification: PaymentNotification, channel: str = payment.channel) -> str:
            outcome = await apply_notification(session, runtime, channel, notification)
            return "succeeded" if outcome in ("settled", "credited") else outcome

        outcome = await top_ups.ask_provider(
            session,
            provider,
            _order_of(payment),
            apply,
            expire=_expirer(payment) if payment.created_at < expire_before else None,
        )
        resolved += outcome in ("succeeded", "failed", "expired")
    return resolved


def _expirer(payment: DebtPayment) -> Callable[[], None]:
    def expire() -> None:
        payment.status = DebtPaymentStatus.FAILED.value
        payment.failure_reason = EXPIRED
        payment.completed_at = datetime.now(UTC)
        log.info("debt payment not paid in time; the rental stays payable", extra={"debt_payment_id": str(payment.id)})

    return expire
