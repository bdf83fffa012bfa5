"""Top-up rules: idempotent creation, applying a provider's verified notification exactly once, and asking the
provider about top-ups whose notification never came (as Alipay's trade.query, WeChat Pay's order query and
UnionPay's query are meant to be used)."""

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.models import TopUp, TopUpStatus, TransactionKind
from asset_credit_svc.payments import repository
from asset_credit_svc.payments.providers import (
    PROVIDERS_KEY,
    CreatedOrder,
    OrderCloser,
    OrderState,
    PaymentNotification,
    PaymentOrder,
    PaymentProvider,
    PaymentProviderError,
)
from contracts.events import WalletToppedUp
from kit.app import Runtime
from kit.db import after_commit
from kit.errors import BusinessError, Conflict, NotFound

log = logging.getLogger(__name__)

# Why a top-up failed: the channel declined it, or nobody paid it in time and we closed it.
DECLINED = "declined"
EXPIRED = "expired"


class UnsupportedChannel(BusinessError):
    status = 400
    code = "unsupported_channel"
    title = "This payment channel is not supported"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for a different top-up"


class TopUpNotFound(NotFound):
    code = "top_up_not_found"
    title = "Top-up not found"


class InvalidSignatureError(BusinessError):
    status = 400
    code = "invalid_signature"
    title = "The notification signature does not verify"


class InvalidNotification(BusinessError):
    status = 400
    code = "invalid_notification"
    title = "The notification is malformed"


class ChannelMismatch(BusinessError):
    status = 400
    code = "channel_mismatch"
    title = "The top-up was not made through this channel"


class AmountMismatch(BusinessError):
    status = 400
    code = "amount_mismatch"
    title = "The notified amount differs from the top-up's amount"


class TopUpNotPending(Conflict):
    code = "top_up_not_pending"
    title = "The top-up is no longer waiting for payment"


class ProviderUnavailable(BusinessError):
    status = 503
    code = "provider_unavailable"
    title = "The payment channel did not answer; try again"


def provider_for(providers: Mapping[str, PaymentProvider], channel: str) -> PaymentProvider:
    provider = providers.get(channel)
    if provider is None:
        raise UnsupportedChannel(f"Unsupported payment channel {channel!r}")
    return provider


async def create_top_up(
    session: AsyncSession,
    providers: Mapping[str, PaymentProvider],
    *,
    user_id: uuid.UUID,
    idempotency_key: str,
    amount_fen: int,
    channel: str,
) -> tuple[TopUp, bool]:
    """The top-up for this idempotency key, and whether this call created it. The provider order
    is opened after the commit, never while the transaction is open."""
    provider = provider_for(providers, channel)
    inserted = (
        await session.execute(
            insert(TopUp)
            .values(
                id=uuid.uuid4(),
                user_id=user_id,
                idempotency_key=idempotency_key,
                amount_fen=amount_fen,
                channel=channel,
                status=TopUpStatus.PENDING.value,
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
            .returning(TopUp.id)
        )
    ).scalar_one_or_none()
    created = inserted is not None
    top_up = (
        await session.execute(select(TopUp).where(TopUp.user_id == user_id, TopUp.idempotency_key == idempotency_key))
    ).scalar_one()
    if top_up.amount_fen != amount_fen or top_up.channel != channel:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with another amount or channel", top_up_id=str(top_up.id)
        )
    if top_up.status == TopUpStatus.PENDING:
        # On a retry as well: providers are idempotent on out_trade_no, so this re-opens nothing,
        # but it recovers a top-up whose order could not be opened the first time.
        order = _order_of(top_up)
        after_commit(session, lambda: _open_order(provider, order))
    return top_up, created


def _order_of(top_up: TopUp) -> PaymentOrder:
    return PaymentOrder(
        out_trade_no=str(top_up.id), amount_fen=top_up.amount_fen, subject="Wallet top-up", placed_at=top_up.created_at
    )


async def pay_params(
    session: AsyncSession, providers: Mapping[str, PaymentProvider], *, user_id: uuid.UUID, top_up_id: uuid.UUID
) -> tuple[TopUp, CreatedOrder]:
    """The channel's order for a pending top-up, for the user's app to pay (providers are idempotent on
    `out_trade_no`, so asking again opens nothing new)."""
    top_up = await get_top_up(session, user_id, top_up_id)
    if top_up.status != TopUpStatus.PENDING:
        raise TopUpNotPending()
    provider = provider_for(providers, top_up.channel)
    try:
        return top_up, await provider.create_order(_order_of(top_up))
    except PaymentProviderError as exc:
        log.warning("the provider did not open the order", extra={"top_up_id": str(top_up.id), "error": str(exc)})
        raise ProviderUnavailable() from None


async def _open_order(provider: PaymentProvider, order: PaymentOrder) -> None:
    try:
        await provider.create_order(order)
    except Exception:
        log.exception("could not open the provider order", extra={"top_up_id": order.out_trade_no})


async def get_top_up(session: AsyncSession, user_id: uuid.UUID, top_up_id: uuid.UUID) -> TopUp:
    top_up = await session.get(TopUp, top_up_id)
    if top_up is None or top_up.user_id != user_id:
        raise TopUpNotFound()
    return top_up


async def apply_notification(
    session: AsyncSession, runtime: Runtime, channel: str, notification: PaymentNotification
) -> str:
    """Apply a verified notification; returns `succeeded`, `failed` or `duplicate`.
    Under the top-up's row lock, so concurrent copies of one notification apply once."""
    try:
        top_up_id = uuid.UUID(notification.out_trade_no)
    except ValueError:
        raise TopUpNotFound() from None
    top_up = (
        await session.execute(
            select(TopUp).where(TopUp.id == top_up_id).with_for_update().execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if top_up is None:
        raise TopUpNotFound()
    if top_up.channel != channel:
        raise ChannelMismatch()
    if notification.amount_fen != top_up.amount_fen:
        log.error(
            "payment notification amount differs from the top-up",
            extra={"top_up_id": str(top_up.id), "expected": top_up.amount_fen, "notified": notification.amount_fen},
        )
        raise AmountMismatch()
    if top_up.status == TopUpStatus.FAILED and top_up.failure_reason == EXPIRED and notification.status == "SUCCESS":
        # Paid after we closed it (a channel that cannot close an order, or a payment already under way):
        # the money was taken, so it is credited all the same.
        log.warning("a top-up closed as expired was paid after all; credited", extra={"top_up_id": str(top_up.id)})
    elif top_up.status != TopUpStatus.PENDING:
        if (top_up.status == TopUpStatus.SUCCEEDED) != (notification.status == "SUCCESS"):
            log.error(
                "payment notification contradicts a final top-up; ignored",
                extra={"top_up_id": str(top_up.id), "status": top_up.status, "notified": notification.status},
            )
        return "duplicate"
    now = datetime.now(UTC)
    top_up.provider_trade_no = notification.trade_no
    top_up.completed_at = now
    if notification.status == "FAILED":
        top_up.status = TopUpStatus.FAILED.value
        top_up.failure_reason = DECLINED
        return "failed"
    wallet = ledger.user_balance(top_up.user_id)
    posted = await ledger.post(
        session,
        kind=TransactionKind.TOP_UP.value,
        reference=f"topup:{top_up.id}",
        legs=[(ledger.provider_clearing(channel), -top_up.amount_fen), (wallet, top_up.amount_fen)],
    )
    if posted is None:  # cannot happen while the top-up is pending (or expired, never posted) under its lock
        raise RuntimeError(f"top-up {top_up.id} is pending but already posted")
    top_up.status = TopUpStatus.SUCCEEDED.value
    top_up.failure_reason = None
    top_up.paid_at = notification.paid_at or now
    top_up.transaction_id = posted.id
    await runtime.publish(
        session,
        WalletToppedUp(
            user_id=top_up.user_id,
            top_up_id=top_up.id,
            amount_fen=top_up.amount_fen,
            balance_fen=posted.balance_after(wallet),
            provider=channel,
        ),
        key=str(top_up.user_id),
    )
    return "succeeded"


QueryOutcome = Literal["succeeded", "failed", "duplicate", "expired", "reopened", "waiting", "unreachable"]
# Applies what the provider said as its notification would have been applied (the notify endpoint's path).
ApplyNotification = Callable[[PaymentNotification], Awaitable[str]]


async def resolve_stale_top_ups(
    session: AsyncSession, runtime: Runtime, *, older_than: datetime, expire_before: datetime, limit: int = 50
) -> dict[str, int]:
    """Ask the provider about top-ups still pending since before `older_than` (their notification was lost, or
    its retries ran out while this service was down); see `ask_provider`. One still unpaid since before
    `expire_before` is closed at the provider where the channel can close orders, and failed as `expired`.
    Rows are claimed with SKIP LOCKED, so replicas share the work. Returns how many ended each way."""
    providers: Mapping[str, PaymentProvider] = runtime.extras[PROVIDERS_KEY]
    outcomes: dict[str, int] = {}
    for top_up in await repository.stale_pending_top_ups(session, older_than, limit):
        provider = providers.get(top_up.channel)
        if provider is None:  # a channel switched off since: its top-ups wait for it
            continue

        async def apply(notification: PaymentNotification, channel: str = top_up.channel) -> str:
            return await apply_notification(session, runtime, channel, notification)

        outcome = await ask_provider(
            session,
            provider,
            _order_of(top_up),
            apply,
            expire=_expirer(top_up) if top_up.created_at < expire_before else None,
        )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if outcomes:
        log.info("stale top-ups asked at their providers", extra={"outcomes": outcomes})
    return outcomes


def _expirer(top_up: TopUp) -> Callable[[], None]:
    def expire() -> None:
        top_up.status = TopUpStatus.FAILED.value
        top_up.failure_reason = EXPIRED
        top_up.completed_at = datetime.now(UTC)

    return expire


async def ask_provider(
    session: AsyncSession,
    provider: PaymentProvider,
    order: PaymentOrder,
    apply: ApplyNotification,
    *,
    expire: Callable[[], None] | None = None,
) -> QueryOutcome:
    """One pending order whose notification did not come, asked at its provider (Alipay trade.query, WeChat
    Pay's order query, UnionPay's query): a paid or declined order is applied through `apply`, as its
    notification would have been (so a notification that comes after is a duplicate); with `expire` (the order
    is past its time) an unpaid one is closed at the provider where the channel can close orders, then
    `expire` marks it ours; otherwise an order the provider does not know is opened again under the same number
    after the commit (a payment already made is not made twice), and one it knows unpaid waits."""
    try:
        answer = await provider.query_order(order.out_trade_no, order.placed_at)
    except PaymentProviderError as exc:
        log.warning("provider query failed; asking later", extra={"order": order.out_trade_no, "error": str(exc)})
        return "unreachable"
    if answer.state in (OrderState.SUCCESS, OrderState.FAILED):
        if answer.state == OrderState.SUCCESS and answer.amount_fen is None:
            log.error("the provider says paid without an amount; asking later", extra={"order": order.out_trade_no})
            return "unreachable"
        notification = PaymentNotification(
            out_trade_no=order.out_trade_no,
            trade_no=answer.trade_no or f"query:{order.out_trade_no}"[:100],
            amount_fen=answer.amount_fen if answer.amount_fen is not None else order.amount_fen,
            status="SUCCESS" if answer.state == OrderState.SUCCESS else "FAILED",
            paid_at=answer.paid_at,
            nonce=f"query:{uuid.uuid4().hex}",
        )
        try:
            applied = await apply(notification)
        except BusinessError as exc:  # another amount, say: logged there, a person must look; it stays pending
            log.error("the provider's answer cannot be applied", extra={"order": order.out_trade_no, "code": exc.code})
            return "unreachable"
        return "succeeded" if applied == "succeeded" else "failed" if applied == "failed" else "duplicate"
    if expire is not None:
        if isinstance(provider, OrderCloser):
            try:
                await provider.close_order(order.out_trade_no, order.placed_at)
            except PaymentProviderError as exc:  # not closed, not failed: asked again at the next turn
                log.warning("could not close an expired order", extra={"order": order.out_trade_no, "error": str(exc)})
                return "unreachable"
        expire()
        return "expired"
    if answer.state == OrderState.NOT_FOUND:
        after_commit(session, lambda: _open_order(provider, order))
        return "reopened"
    return "waiting"
