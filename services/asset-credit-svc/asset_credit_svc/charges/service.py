"""Settling a charge billing requested (clause 6.1.5): from the balance first; when the balance is
short and the user chose a payment provider, the provider is charged the shortfall (an order
`chg_<charge_id>`, answered by a signed asynchronous notification, or by a query when the outcome
stays unknown); otherwise the charge fails.

Before the balance, the user's virtual assets cover what they can (`assets.rules`: a card, then a
coupon, then red packets), in the same ledger transaction as the balance's part; when the balance
is short nothing of the assets is spent, and they are worked out again once the provider paid.

The `charges` row is claimed first (its primary key is the charge id), so a second request for
the same charge, concurrent or later, waits for the first and then changes nothing. A notification
is applied under the charge's row lock and only while the charge awaits the provider, so a
duplicate changes nothing; a forged one never verifies (see payments.signing).
"""

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.assets import rules
from asset_credit_svc.assets import service as assets
from asset_credit_svc.credit import service as credit
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.models import Charge, ChargeStatus, PaymentMethod, TransactionKind
from asset_credit_svc.payments.providers import (
    PROVIDERS_KEY,
    OrderState,
    PaymentNotification,
    PaymentOrder,
    PaymentProvider,
    PaymentProviderError,
)
from asset_credit_svc.payments.service import AmountMismatch, ChannelMismatch
from asset_credit_svc.settings import Settings
from contracts.events import ChargeFailed, ChargeRequested, ChargeSettled
from kit.app import Runtime
from kit.db import after_commit
from kit.errors import NotFound

log = logging.getLogger(__name__)

INSUFFICIENT_BALANCE = "insufficient_balance"
INVALID_AMOUNT = "invalid_amount"
ALREADY_CHARGED = "rental_already_charged"
PROVIDER_DECLINED = "provider_declined"
PROVIDER_UNAVAILABLE = "provider_unavailable"

CHARGE_ORDER_PREFIX = "chg_"


class ChargeOrderNotFound(NotFound):
    code = "charge_order_not_found"
    title = "No charge awaits this order"


def order_no(charge_id: uuid.UUID) -> str:
    return f"{CHARGE_ORDER_PREFIX}{charge_id}"


def is_charge_order(out_trade_no: str) -> bool:
    return out_trade_no.startswith(CHARGE_ORDER_PREFIX)


def providers_of(runtime: Runtime) -> Mapping[str, PaymentProvider]:
    providers: Mapping[str, PaymentProvider] = runtime.extras.get(PROVIDERS_KEY, {})
    return providers


async def payment_method(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return (
        await session.execute(select(PaymentMethod.channel).where(PaymentMethod.user_id == user_id))
    ).scalar_one_or_none()


async def settle(session: AsyncSession, runtime: Runtime, request: ChargeRequested, source_event_id: uuid.UUID) -> str:
    """Returns `settled`, `failed` or `duplicate`."""
    claimed = (
        await session.execute(
            insert(Charge)
            .values(
                charge_id=request.charge_id,
                rental_id=request.rental_id,
                user_id=request.user_id,
                amount_fen=request.amount_fen,
                status=ChargeStatus.PENDING.value,
                source_event_id=source_event_id,
                created_at=datetime.now(UTC),
                ended_at=request.ended_at,
                duration_seconds=request.duration_seconds,
                region_code=request.region_code,
            )
            .on_conflict_do_nothing(index_elements=["charge_id"])
            .returning(Charge.charge_id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        log.info("charge already handled; nothing changes", extra={"charge_id": str(request.charge_id)})
        return "duplicate"

    if request.amount_fen < 0:
        return await _fail(session, runtime, request, INVALID_AMOUNT)
    # A rental is collected at most once, whatever charge ids billing sends (a manual payment is a
    # new charge id after a failed one). The partial unique index makes this hold under races too.
    already = (
        await session.execute(
            select(Charge.charge_id).where(
                Charge.rental_id == request.rental_id, Charge.status == ChargeStatus.SETTLED.value
            )
        )
    ).first()
    if already is not None:
        log.error(
            "a second charge for an already collected rental; refused",
            extra={"charge_id": str(request.charge_id), "rental_id": str(request.rental_id)},
        )
        return await _fail(session, runtime, request, ALREADY_CHARGED)
    if request.amount_fen == 0:
        return await _settle(session, runtime, request, None, rules.Plan(fee_fen=0))
    try:
        posted, covered = await _collect(session, request)
    except InsufficientFunds as short:
        channel = await payment_method(session, request.user_id)
        provider = providers_of(runtime).get(channel) if channel is not None else None
        if channel is None or provider is None or not provider.charges_without_user:
            # Nobody can take the shortfall now (a real channel needs the user in their app): the fee becomes a
            # debt the user pays through a channel (debts/), and borrowing waits for it.
            return await _fail(session, runtime, request, INSUFFICIENT_BALANCE)
        return await _ask_provider(session, runtime, request, channel, short.amount_fen - short.balance_fen)
    return await _settle(session, runtime, request, posted, covered)


async def _collect(session: AsyncSession, request: ChargeRequested) -> tuple[ledger.PostedTransaction, rules.Plan]:
    """Post the charge: the user's assets first, the balance the rest; then spend the assets.
    Raises InsufficientFunds (for the balance) before anything is written."""
    now = datetime.now(UTC)
    covered = await assets.plan_for_charge(session, request.user_id, request.amount_fen, request.duration_seconds, now)
    wallet = ledger.user_balance(request.user_id)
    try:
        posted = await ledger.post(
            session,
            kind=TransactionKind.CHARGE.value,
            reference=f"charge:{request.charge_id}",
            legs=rules.charge_legs(request.user_id, covered),
        )
    except InsufficientFunds as short:
        if short.account != wallet:  # the red packet account always holds what its packets hold
            raise RuntimeError(f"ledger refused a charge leg of {short.account}") from short
        raise
    if posted is None:  # cannot happen: the charge id was claimed
        raise RuntimeError(f"charge {request.charge_id} claimed but already posted")
    await assets.apply_plan(session, covered, rental_id=request.rental_id, charge_id=request.charge_id, now=now)
    return posted, covered


async def _settle(
    session: AsyncSession,
    runtime: Runtime,
    request: ChargeRequested,
    posted: ledger.PostedTransaction | None,
    covered: rules.Plan,
) -> str:
    wallet = ledger.user_balance(request.user_id)
    if posted is not None and posted.touches(wallet):  # the charge just set it: no need to read it again
        balance_fen = posted.balance_after(wallet)
    else:
        balance_fen = await ledger.balance_of(session, wallet)
    transaction_id = posted.id if posted is not None else None
    await session.execute(
        update(Charge)
        .where(Charge.charge_id == request.charge_id)
        .values(
            status=ChargeStatus.SETTLED.value,
            balance_after_fen=balance_fen,
            transaction_id=transaction_id,
            card_fen=covered.card_fen,
            coupon_fen=covered.coupon_fen,
            red_packet_fen=covered.red_packet_fen,
        )
    )
    await runtime.publish(
        session,
        ChargeSettled(
            charge_id=request.charge_id,
            rental_id=request.rental_id,
            user_id=request.user_id,
            amount_fen=request.amount_fen,
            balance_fen=balance_fen,
            settled_at=datetime.now(UTC),
            card_fen=covered.card_fen,
            coupon_fen=covered.coupon_fen,
            red_packet_fen=covered.red_packet_fen,
            paid_fen=covered.cash_fen,
        ),
        key=str(request.user_id),
    )
    return "settled"


def _request_of(charge: Charge) -> ChargeRequested:
    return ChargeRequested(
        charge_id=charge.charge_id,
        rental_id=charge.rental_id,
        user_id=charge.user_id,
        amount_fen=charge.amount_fen,
        ended_at=charge.ended_at,
        duration_seconds=charge.duration_seconds,
    )


async def _fail(session: AsyncSession, runtime: Runtime, request: ChargeRequested, reason: str) -> str:
    if reason in (INSUFFICIENT_BALANCE, PROVIDER_DECLINED, PROVIDER_UNAVAILABLE):  # the user owes the rental
        assert isinstance(runtime.settings, Settings)
        await credit.on_unpaid(session, runtime.settings, request.user_id, request.charge_id)
    await session.execute(
        update(Charge)
        .where(Charge.charge_id == request.charge_id)
        .values(status=ChargeStatus.FAILED.value, failure_reason=reason)
    )
    await runtime.publish(
        session,
        ChargeFailed(
            charge_id=request.charge_id,
            rental_id=request.rental_id,
            user_id=request.user_id,
            amount_fen=request.amount_fen,
            reason=reason,
        ),
        key=str(request.user_id),
    )
    log.info("charge failed", extra={"charge_id": str(request.charge_id), "reason": reason})
    return "failed"


async def settle_owed(session: AsyncSession, runtime: Runtime, charge: Charge) -> bool:
    """Collect a failed charge late, from what the user holds now (a debt paid through a channel put the money
    in the wallet): the ordinary settlement, which publishes `asset.charge.settled` for this charge id. The
    caller holds the rental's charges' row locks. False, with nothing changed, when the wallet (with the assets)
    cannot cover it: the rental stays owed."""
    request = _request_of(charge)
    try:
        posted, covered = await _collect(session, request)
    except InsufficientFunds:
        return False
    charge.failure_reason = None
    charge.completed_at = datetime.now(UTC)
    await session.flush()
    await _settle(session, runtime, request, posted, covered)
    return True


# ---- the user's provider pays the shortfall -------------------------------------------------


async def _ask_provider(
    session: AsyncSession, runtime: Runtime, request: ChargeRequested, channel: str, shortfall_fen: int
) -> str:
    """The charge waits for the provider; the order is opened once the transaction committed."""
    requested_at = datetime.now(UTC)
    await session.execute(
        update(Charge)
        .where(Charge.charge_id == request.charge_id)
        .values(
            status=ChargeStatus.AWAITING_PROVIDER.value,
            provider_channel=channel,
            provider_amount_fen=shortfall_fen,
            provider_requested_at=requested_at,
        )
    )
    _open_order_after_commit(session, runtime, request.charge_id, channel, shortfall_fen, requested_at)
    log.info(
        "balance short; charging the user's provider",
        extra={"charge_id": str(request.charge_id), "channel": channel, "shortfall_fen": shortfall_fen},
    )
    return "awaiting_provider"


def _open_order_after_commit(
    session: AsyncSession,
    runtime: Runtime,
    charge_id: uuid.UUID,
    channel: str,
    amount_fen: int,
    requested_at: datetime,
) -> None:
    provider = providers_of(runtime)[channel]
    order = PaymentOrder(
        out_trade_no=order_no(charge_id), amount_fen=amount_fen, subject="Power bank rental fee", placed_at=requested_at
    )

    async def open_order() -> None:
        try:
            await provider.create_order(order)
        except Exception:  # the provider sweep re-opens it (create_order is idempotent)
            log.exception("could not open the provider order for a charge", extra={"charge_id": str(charge_id)})

    after_commit(session, open_order)


async def _locked_charge(session: AsyncSession, charge_id: uuid.UUID) -> Charge | None:
    stmt = (
        select(Charge).where(Charge.charge_id == charge_id).with_for_update().execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def apply_notification(
    session: AsyncSession, runtime: Runtime, channel: str, notification: PaymentNotification
) -> str:
    """A verified provider notification for a charge order: `settled`, `failed` or `duplicate`."""
    try:
        charge_id = uuid.UUID(notification.out_trade_no.removeprefix(CHARGE_ORDER_PREFIX))
    except ValueError:
        raise ChargeOrderNotFound() from None
    charge = await _locked_charge(session, charge_id)
    if charge is None or charge.provider_channel is None:
        raise ChargeOrderNotFound()
    if charge.provider_channel != channel:
        raise ChannelMismatch()
    if notification.amount_fen != charge.provider_amount_fen:
        log.error(
            "provider notification amount differs from the charge order",
            extra={
                "charge_id": str(charge_id),
                "expected": charge.provider_amount_fen,
                "notified": notification.amount_fen,
            },
        )
        raise AmountMismatch()
    return await _resolve(session, runtime, charge, notification.status == "SUCCESS", notification.trade_no)


async def _resolve(session: AsyncSession, runtime: Runtime, charge: Charge, paid: bool, trade_no: str | None) -> str:
    """Apply the provider's outcome to a charge (under its row lock)."""
    if charge.status != ChargeStatus.AWAITING_PROVIDER.value:
        if paid and charge.status == ChargeStatus.FAILED.value and charge.provider_transaction_id is None:
            # We gave up on the order, but the provider took the money after all: it goes to the
            # user's wallet (nothing is lost); the rental stays unpaid until the user pays it.
            await _credit_provider_payment(session, charge, trade_no)
            log.warning("late provider payment credited to the wallet", extra={"charge_id": str(charge.charge_id)})
        elif paid != (charge.status == ChargeStatus.SETTLED.value):
            log.error(
                "provider outcome contradicts a final charge; ignored",
                extra={"charge_id": str(charge.charge_id), "status": charge.status, "paid": paid},
            )
        return "duplicate"
    request = _request_of(charge)
    charge.completed_at = datetime.now(UTC)
    if not paid:
        charge.provider_trade_no = trade_no
        await session.flush()
        return await _fail(session, runtime, request, PROVIDER_DECLINED)
    # Lock order: the user's assets before ledger accounts, as in every settlement.
    await assets.lock_spendable(session, charge.user_id, datetime.now(UTC))
    await _credit_provider_payment(session, charge, trade_no)
    already = (
        await session.execute(
            select(Charge.charge_id).where(
                Charge.rental_id == charge.rental_id, Charge.status == ChargeStatus.SETTLED.value
            )
        )
    ).first()
    if already is not None:  # the provider's money stays in the wallet
        return await _fail(session, runtime, request, ALREADY_CHARGED)
    try:
        posted, covered = await _collect(session, request)
    except InsufficientFunds:
        # The balance (or what the assets cover) dropped meanwhile; the provider's money stays in
        # the wallet.
        return await _fail(session, runtime, request, INSUFFICIENT_BALANCE)
    return await _settle(session, runtime, request, posted, covered)


async def _credit_provider_payment(session: AsyncSession, charge: Charge, trade_no: str | None) -> None:
    assert charge.provider_channel is not None
    assert charge.provider_amount_fen is not None
    posted = await ledger.post(
        session,
        kind=TransactionKind.PROVIDER_PAYMENT.value,
        reference=f"provider_payment:{charge.charge_id}",
        legs=[
            (ledger.provider_clearing(charge.provider_channel), -charge.provider_amount_fen),
            (ledger.user_balance(charge.user_id), charge.provider_amount_fen),
        ],
    )
    if posted is not None:
        charge.provider_transaction_id = posted.id
    charge.provider_trade_no = trade_no
    await session.flush()


async def resolve_unknown_outcomes(
    session: AsyncSession, runtime: Runtime, *, older_than: datetime, give_up_before: datetime, limit: int = 50
) -> int:
    """Ask the provider about charges whose notification has not come (timeout, lost notification,
    order never opened). SUCCESS/FAILED are applied like a notification; an order the provider does
    not know is opened again, and failed once it is older than `give_up_before`; PENDING waits."""
    stmt = (
        select(Charge)
        .where(Charge.status == ChargeStatus.AWAITING_PROVIDER.value, Charge.provider_requested_at < older_than)
        .order_by(Charge.provider_requested_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    resolved = 0
    for charge in (await session.execute(stmt)).scalars().all():
        assert charge.provider_channel is not None
        assert charge.provider_amount_fen is not None
        assert charge.provider_requested_at is not None
        provider = providers_of(runtime).get(charge.provider_channel)
        if provider is None:
            continue
        try:
            answer = await provider.query_order(order_no(charge.charge_id), charge.provider_requested_at)
        except PaymentProviderError as exc:
            log.warning(
                "provider query failed; asking later", extra={"charge_id": str(charge.charge_id), "error": str(exc)}
            )
            continue
        if answer.state in (OrderState.SUCCESS, OrderState.FAILED):
            if answer.amount_fen is not None and answer.amount_fen != charge.provider_amount_fen:
                log.error(
                    "provider reports another amount for the charge order", extra={"charge_id": str(charge.charge_id)}
                )
                continue
            await _resolve(session, runtime, charge, answer.state == OrderState.SUCCESS, answer.trade_no)
            resolved += 1
        elif answer.state == OrderState.NOT_FOUND:
            if charge.provider_requested_at < give_up_before:
                request = _request_of(charge)
                charge.completed_at = datetime.now(UTC)
                await session.flush()
                await _fail(session, runtime, request, PROVIDER_UNAVAILABLE)
                resolved += 1
            else:
                _open_order_after_commit(
                    session,
                    runtime,
                    charge.charge_id,
                    charge.provider_channel,
                    charge.provider_amount_fen,
                    charge.provider_requested_at,
                )
    return resolved
