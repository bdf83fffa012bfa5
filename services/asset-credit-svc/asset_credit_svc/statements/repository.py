"""What we hold for a channel's statement: our orders and refunds at the channel (top-ups, provider-paid
charges, debts paid through a channel, deposits paid; withdrawal parts and deposit refunds) and the statement's
stored lines."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.charges.service import CHARGE_ORDER_PREFIX
from asset_credit_svc.debts.service import DEBT_ORDER_PREFIX
from asset_credit_svc.deposit.service import DEPOSIT_ORDER_PREFIX, DEPOSIT_REFUND_PREFIX
from asset_credit_svc.models import StatementLineRow, StatementMismatch, StatementRun
from asset_credit_svc.payments.providers import StatementLine
from asset_credit_svc.withdrawals.service import WITHDRAWAL_REFUND_PREFIX


@dataclass(frozen=True)
class OurItem:
    kind: str  # payment | refund
    number: str
    amount_fen: int
    status: str
    # Money moved at the channel as far as we know: a credited payment, a confirmed refund.
    settled: bool
    at: datetime | None


# Our side of a channel, one row per order or refund number the channel knows us by. A charge's order is
# settled once its payment was credited (provider_transaction_id), even late after we gave up.
_OURS = """
WITH ours(kind, number, amount_fen, status, settled, at) AS (
    SELECT 'payment', id::text, amount_fen, status, status = 'succeeded', paid_at
    FROM top_ups WHERE channel = :channel
  UNION ALL
    SELECT 'payment', :charge || charge_id::text, provider_amount_fen, status,
           provider_transaction_id IS NOT NULL, completed_at
    FROM charges WHERE provider_channel = :channel
  UNION ALL
    SELECT 'payment', :debt || id::text, amount_fen, status, transaction_id IS NOT NULL, completed_at
    FROM debt_payments WHERE channel = :channel
  UNION ALL
    SELECT 'payment', :deposit || id::text, amount_fen, status, status = 'succeeded', completed_at
    FROM deposit_operations WHERE channel = :channel AND kind = 'pay'
  UNION ALL
    SELECT 'refund', :deposit_refund || id::text, amount_fen, status, status = 'succeeded', completed_at
    FROM deposit_operations WHERE channel = :channel AND kind = 'refund'
  UNION ALL
    SELECT 'refund', :withdrawal || id::text, amount_fen, status, status = 'succeeded', completed_at
    FROM withdrawal_parts WHERE channel = :channel
)
SELECT kind, number, amount_fen, status, settled, at FROM ours
WHERE (settled AND at >= :since AND at < :until) OR (kind || ':' || number) = ANY(:keys)
"""


async def our_items(
    session: AsyncSession, channel: str, since: datetime, until: datetime, keys: Sequence[str]
) -> list[OurItem]:
    """Our settled items of the window, and any of ours whose `kind:number` is in `keys`."""
    rows = await session.execute(
        text(_OURS),
        {
            "channel": channel,
            "since": since,
            "until": until,
            "keys": list(keys),
            "charge": CHARGE_ORDER_PREFIX,
            "debt": DEBT_ORDER_PREFIX,
            "deposit": DEPOSIT_ORDER_PREFIX,
            "deposit_refund": DEPOSIT_REFUND_PREFIX,
            "withdrawal": WITHDRAWAL_REFUND_PREFIX,
        },
    )
    return [OurItem(*row) for row in rows.all()]


async def lock_day(session: AsyncSession, channel: str, bill_date: date) -> None:
    """One reconciliation of a channel's day at a time, across replicas (until the transaction ends)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"statement:{channel}:{bill_date}"}
    )


async def store_lines(session: AsyncSession, channel: str, bill_date: date, lines: Sequence[StatementLine]) -> None:
    await session.execute(
        delete(StatementLineRow).where(StatementLineRow.channel == channel, StatementLineRow.bill_date == bill_date)
    )
    if not lines:
        return
    values = [
        {
            "channel": channel,
            "kind": line.kind,
            "number": line.number,
            "bill_date": bill_date,
            "out_trade_no": line.out_trade_no,
            "trade_no": line.trade_no,
            "amount_fen": line.amount_fen,
            "fee_fen": line.fee_fen,
            "at": line.at,
        }
        for line in lines
    ]
    stmt = insert(StatementLineRow).values(values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["channel", "kind", "number"],
            set_={
                name: stmt.excluded[name]
                for name in ("bill_date", "out_trade_no", "trade_no", "amount_fen", "fee_fen", "at")
            },
        )
    )


async def listed_keys(session: AsyncSession, channel: str, keys: Sequence[str]) -> set[str]:
    """Which of `kind:number` appear in any stored statement of the channel (a neighbouring day's too)."""
    if not keys:
        return set()
    rows = await session.execute(
        select(StatementLineRow.kind, StatementLineRow.number).where(
            StatementLineRow.channel == channel,
            (StatementLineRow.kind + ":" + StatementLineRow.number).in_(list(keys)),
        )
    )
    return {f"{kind}:{number}" for kind, number in rows.all()}


async def replace_result(session: AsyncSession, run: StatementRun, mismatches: Sequence[StatementMismatch]) -> None:
    await session.execute(
        delete(StatementMismatch).where(
            StatementMismatch.channel == run.channel, StatementMismatch.bill_date == run.bill_date
        )
    )
    session.add_all(mismatches)
    await session.merge(run)
    await session.flush()


async def result(
    session: AsyncSession, channel: str, bill_date: date
) -> tuple[StatementRun, list[StatementMismatch]] | None:
    run = await session.get(StatementRun, (channel, bill_date), populate_existing=True)
    if run is None:
        return None
    found = await session.execute(
        select(StatementMismatch)
        .where(StatementMismatch.channel == channel, StatementMismatch.bill_date == bill_date)
        .order_by(StatementMismatch.kind, StatementMismatch.number)
    )
    return run, list(found.scalars())


_FEES_BOOKED = text(
    """
    SELECT COALESCE(-SUM(p.amount_fen), 0), count(DISTINCT t.id)
    FROM ledger_transactions t
    JOIN postings p ON p.transaction_id = t.id
    JOIN accounts a ON a.id = p.account_id AND a.kind = 'platform_provider_fees'
    WHERE t.reference LIKE :prefix
    """
)


async def fees_booked(session: AsyncSession, prefix: str) -> tuple[int, int]:
    """The fees already booked under `prefix` (a channel's day) and in how many transactions."""
    booked, count = (await session.execute(_FEES_BOOKED, {"prefix": prefix + "%"})).one()
    return int(booked), int(count)
