"""Top-up rules: idempotent creation, and applying a provider's verified notification exactly once."""

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.models import TopUp, TopUpStatus, TransactionKind
from asset_credit_svc.payments.providers import (
    CreatedOrder,
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
    if top_up.status != TopUpStatus.PENDING:
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
        top_up.failure_reason = "declined"
        return "failed"
    wallet = ledger.user_balance(top_up.user_id)
    posted = await ledger.post(
        session,
        kind=TransactionKind.TOP_UP.value,
        reference=f"topup:{top_up.id}",
        legs=[(ledger.provider_clearing(channel), -top_up.amount_fen), (wallet, top_up.amount_fen)],
    )
    if posted is None:  # cannot happen while the top-up is pending under its lock
        raise RuntimeError(f"top-up {top_up.id} is pending but already posted")
    top_up.status = TopUpStatus.SUCCEEDED.value
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
