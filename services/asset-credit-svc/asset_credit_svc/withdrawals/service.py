"""Withdrawing the balance: the money goes back through the provider orders it came in by (the
user's top-ups, newest first, each at most what is left of it), never elsewhere. One ledger
transaction takes it off the wallet (user_balance -> provider_clearing per channel) together
with the parts; each part is then refunded at its provider (idempotent on the part id) and
retried by the sweep until the provider confirms. Refused while the user owes a rental.
Idempotent on (user, Idempotency-Key): the same key for another amount is 409. Never commits."""

import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges import service as charges
from asset_credit_svc.deposit.service import Owing, refusal
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.ledger.service import AccountRef
from asset_credit_svc.models import TopUp, TopUpStatus, TransactionKind, Withdrawal, WithdrawalPart
from asset_credit_svc.payments.providers import PaymentProviderError
from asset_credit_svc.payments.service import IdempotencyKeyReused
from kit.app import Runtime
from kit.db import after_commit, unit_of_work
from kit.errors import BusinessError

log = logging.getLogger(__name__)
# A withdrawal part's refund number at the channel.
WITHDRAWAL_REFUND_PREFIX = "wd_"


class NotWithdrawable(BusinessError):
    status = 409
    code = "not_withdrawable"
    title = "This amount cannot be withdrawn (balance, or what the top-ups can take back)"


async def withdrawable_top_ups(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[TopUp, int]]:
    """Succeeded top-ups, newest first, with what is left to refund of each."""
    taken = (
        select(WithdrawalPart.top_up_id, func.sum(WithdrawalPart.amount_fen).label("taken"))
        .group_by(WithdrawalPart.top_up_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(TopUp, func.coalesce(taken.c.taken, 0))
            .outerjoin(taken, taken.c.top_up_id == TopUp.id)
            .where(TopUp.user_id == user_id, TopUp.status == TopUpStatus.SUCCEEDED.value)
            .order_by(TopUp.paid_at.desc(), TopUp.id)
        )
    ).all()
    return [(top_up, top_up.amount_fen - int(used)) for top_up, used in rows if top_up.amount_fen > int(used)]


async def withdraw(
    session: AsyncSession, runtime: Runtime, *, user_id: uuid.UUID, key: str, amount_fen: int
) -> tuple[Withdrawal, list[WithdrawalPart], bool]:
    earlier = (
        await session.execute(
            select(Withdrawal).where(Withdrawal.user_id == user_id, Withdrawal.idempotency_key == key)
        )
    ).scalar_one_or_none()
    if earlier is not None:
        if earlier.amount_fen != amount_fen:
            raise IdempotencyKeyReused("This Idempotency-Key was used for another withdrawal")
        return earlier, await parts_of(session, earlier.id), False
    reason = await refusal(session, user_id)
    if isinstance(reason, Owing):
        raise reason
    # Serialize this user's withdrawals: what is left of each top-up must not be taken twice.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"withdraw:{user_id}"))))
    plan: list[tuple[TopUp, int]] = []
    left = amount_fen
    for top_up, available in await withdrawable_top_ups(session, user_id):
        if left == 0:
            break
        take = min(left, available)
        plan.append((top_up, take))
        left -= take
    if left > 0:
        raise NotWithdrawable("More than the top-ups can take back")
    withdrawal = Withdrawal(
        id=uuid.uuid4(), user_id=user_id, idempotency_key=key, amount_fen=amount_fen, created_at=datetime.now(UTC)
    )
    session.add(withdrawal)
    await session.flush()
    per_channel: dict[str, int] = defaultdict(int)
    for top_up, take in plan:
        per_channel[top_up.channel] += take
    legs: list[tuple[AccountRef, int]] = [(ledger.user_balance(user_id), -amount_fen)]
    legs += [(ledger.provider_clearing(channel), amount) for channel, amount in sorted(per_channel.items())]
    try:
        posted = await ledger.post(
            session, kind=TransactionKind.WITHDRAWAL.value, reference=f"withdrawal:{withdrawal.id}", legs=legs
        )
    except InsufficientFunds:
        raise NotWithdrawable("The balance is lower than the amount") from None
    withdrawal.transaction_id = posted.id if posted else None
    now = datetime.now(UTC)
    parts = [
        WithdrawalPart(
            id=uuid.uuid4(),
            withdrawal_id=withdrawal.id,
            top_up_id=top_up.id,
            channel=top_up.channel,
            amount_fen=take,
            status="pending",
            created_at=now,
        )
        for top_up, take in plan
    ]
    session.add_all(parts)
    await session.flush()
    part_ids = [p.id for p in parts]

    async def refund_parts() -> None:
        for part_id in part_ids:
            try:
                async with unit_of_work(runtime.sessionmaker) as later:
                    await confirm_part(later, runtime, part_id)
            except Exception:
                log.exception("withdrawal part not confirmed; the sweep retries", extra={"part_id": str(part_id)})

    after_commit(session, refund_parts)
    log.info("withdrawal booked", extra={"withdrawal_id": str(withdrawal.id), "amount_fen": amount_fen})
    return withdrawal, parts, True


async def parts_of(session: AsyncSession, withdrawal_id: uuid.UUID) -> list[WithdrawalPart]:
    stmt = (
        select(WithdrawalPart).where(WithdrawalPart.withdrawal_id == withdrawal_id).order_by(WithdrawalPart.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def confirm_part(session: AsyncSession, runtime: Runtime, part_id: uuid.UUID) -> bool:
    stmt = select(WithdrawalPart).where(WithdrawalPart.id == part_id).with_for_update(skip_locked=True)
    part = (await session.execute(stmt)).scalar_one_or_none()
    if part is None or part.status != "pending":
        return False
    provider = charges.providers_of(runtime).get(part.channel)
    if provider is None:
        return False
    try:
        top_up = await session.get(TopUp, part.top_up_id)
        await provider.refund(
            str(part.top_up_id),
            f"{WITHDRAWAL_REFUND_PREFIX}{part.id}",
            part.amount_fen,
            placed_at=top_up.created_at if top_up else None,
            refund_placed_at=part.created_at,
        )
    except PaymentProviderError as exc:
        log.warning(
            "provider refused the withdrawal refund for now", extra={"part_id": str(part_id), "error": str(exc)}
        )
        return False
    part.status = "succeeded"
    part.completed_at = datetime.now(UTC)
    await session.flush()
    return True


async def retry_pending_parts(session: AsyncSession, runtime: Runtime, older_than: datetime) -> int:
    ids = (
        (
            await session.execute(
                select(WithdrawalPart.id).where(
                    WithdrawalPart.status == "pending", WithdrawalPart.created_at < older_than
                )
            )
        )
        .scalars()
        .all()
    )
    return sum([await confirm_part(session, runtime, part_id) for part_id in ids])


async def on_deregistered(session: AsyncSession, runtime: Runtime, user_id: uuid.UUID) -> None:
    """A deregistered user's balance goes back to the channels it came from, as one withdrawal (key
    `deregistered`, so a redelivered event withdraws nothing more). user-svc refuses deregistration while
    a rental is open or a fee unpaid; if this ledger still sees the user owing, the balance stays and
    the case is logged. Red packets, coupons and cards are promotions: they are not paid out."""
    balance = await ledger.balance_of(session, ledger.user_balance(user_id))
    withdrawable = sum(left for _, left in await withdrawable_top_ups(session, user_id))
    amount = min(balance, withdrawable)
    if amount <= 0:
        return
    try:
        async with session.begin_nested():  # a refusal leaves nothing of the attempt behind
            await withdraw(session, runtime, user_id=user_id, key="deregistered", amount_fen=amount)
    except (Owing, NotWithdrawable) as exc:
        log.warning(
            "user deregistered with money left that cannot be paid back now",
            extra={"user_id": str(user_id), "balance_fen": balance, "code": exc.code},
        )
        return
    if amount < balance:
        log.warning(
            "deregistered user's balance exceeds what their top-ups can take back",
            extra={"user_id": str(user_id), "balance_fen": balance, "withdrawn_fen": amount},
        )
    log.info("deregistered user's balance paid back", extra={"user_id": str(user_id), "amount_fen": amount})
