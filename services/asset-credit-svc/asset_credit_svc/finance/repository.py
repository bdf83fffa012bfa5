"""The ledger summed per account kind (a counterparty's kind carries its channel: `provider_clearing:alipay`)
and per transaction kind, for a period. Every total is a sum of postings, so the report reconciles with the
ledger by construction: the kinds' closing balances add up to zero, and equal the accounts' balances."""

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class AccountKindTotals:
    account_kind: str
    accounts: int
    opening_fen: int
    increases_fen: int
    decreases_fen: int
    closing_fen: int


@dataclass(frozen=True)
class Movement:
    transaction_kind: str
    account_kind: str
    transactions: int
    net_fen: int


_BY_ACCOUNT_KIND = text(
    """
    SELECT a.kind,
           count(DISTINCT a.id),
           COALESCE(SUM(p.amount_fen) FILTER (WHERE p.created_at < :since), 0),
           COALESCE(SUM(p.amount_fen) FILTER (WHERE p.created_at >= :since AND p.amount_fen > 0), 0),
           COALESCE(SUM(p.amount_fen) FILTER (WHERE p.created_at >= :since AND p.amount_fen < 0), 0),
           COALESCE(SUM(p.amount_fen), 0)
    FROM accounts a JOIN postings p ON p.account_id = a.id
    WHERE p.created_at < :until
    GROUP BY a.kind ORDER BY a.kind
    """
)

_BY_TRANSACTION_KIND = text(
    """
    SELECT t.kind, a.kind, count(DISTINCT t.id), SUM(p.amount_fen)
    FROM postings p
    JOIN ledger_transactions t ON t.id = p.transaction_id
    JOIN accounts a ON a.id = p.account_id
    WHERE p.created_at >= :since AND p.created_at < :until
    GROUP BY t.kind, a.kind ORDER BY t.kind, a.kind
    """
)


async def by_account_kind(session: AsyncSession, since: datetime, until: datetime) -> list[AccountKindTotals]:
    rows = await session.execute(_BY_ACCOUNT_KIND, {"since": since, "until": until})
    return [
        AccountKindTotals(str(kind), int(accounts), int(opening), int(increases), int(decreases), int(closing))
        for kind, accounts, opening, increases, decreases, closing in rows.all()
    ]


async def by_transaction_kind(session: AsyncSession, since: datetime, until: datetime) -> list[Movement]:
    rows = await session.execute(_BY_TRANSACTION_KIND, {"since": since, "until": until})
    return [Movement(t_kind, a_kind, int(n), int(net)) for t_kind, a_kind, n, net in rows.all()]


@dataclass(frozen=True)
class DailyMovement:
    day: date
    transaction_kind: str
    account_kind: str
    transactions: int
    net_fen: int


# Beijing's day: the channels' and the finance team's.
_DAILY = text(
    """
    SELECT (p.created_at AT TIME ZONE 'Asia/Shanghai')::date AS day, t.kind, a.kind, count(DISTINCT t.id),
           SUM(p.amount_fen)
    FROM postings p
    JOIN ledger_transactions t ON t.id = p.transaction_id
    JOIN accounts a ON a.id = p.account_id
    WHERE p.created_at >= :since AND p.created_at < :until
    GROUP BY 1, t.kind, a.kind ORDER BY 1, t.kind, a.kind
    """
)


async def daily_movements(session: AsyncSession, since: datetime, until: datetime) -> list[DailyMovement]:
    rows = await session.execute(_DAILY, {"since": since, "until": until})
    return [DailyMovement(day, t_kind, a_kind, int(n), int(net)) for day, t_kind, a_kind, n, net in rows.all()]


@dataclass(frozen=True)
class RevenueRow:
    day: date
    region_code: str | None
    rentals: int
    revenue_fen: int
    card_fen: int
    coupon_fen: int
    red_packet_fen: int
    paid_fen: int
    refunds_fen: int
    # What the ledger's postings say the charges' discounts were: the promotions account took card + coupon,
    # the users' red packet accounts the red packets (checked against the charges' own split).
    ledger_promotions_fen: int
    ledger_red_packets_fen: int


# Rental revenue per Beijing day and the start cabinet's region, from the ledger's charge and refund
# transactions (the fee is what platform_revenue took; refunds what it gave back), with the charge's split of
# its discounts; a refund takes the region of its rental's settled charge.
_REVENUE = text(
    """
    WITH rental_tx AS (
        SELECT t.id, t.kind, t.created_at, c.region_code, c.card_fen, c.coupon_fen, c.red_packet_fen
        FROM ledger_transactions t JOIN charges c ON c.transaction_id = t.id
        WHERE t.kind = 'charge' AND t.created_at >= :since AND t.created_at < :until
      UNION ALL
        SELECT t.id, t.kind, t.created_at,
               (SELECT c.region_code FROM charges c
                WHERE c.rental_id = r.rental_id AND c.status = 'settled' LIMIT 1),
               0, 0, 0
        FROM ledger_transactions t JOIN refunds r ON r.transaction_id = t.id
        WHERE t.kind = 'refund' AND t.created_at >= :since AND t.created_at < :until
    ),
    legs AS (
        SELECT p.transaction_id,
               COALESCE(SUM(p.amount_fen) FILTER (WHERE a.kind = 'platform_revenue'), 0) AS revenue,
               COALESCE(SUM(p.amount_fen) FILTER (WHERE a.kind = 'platform_promotions'), 0) AS promotions,
               COALESCE(SUM(p.amount_fen) FILTER (WHERE a.kind = 'user_red_packet'), 0) AS red_packets,
               COALESCE(SUM(p.amount_fen) FILTER (WHERE a.kind = 'user_balance'), 0) AS balance
        FROM postings p JOIN accounts a ON a.id = p.account_id
        WHERE p.transaction_id IN (SELECT id FROM rental_tx)
        GROUP BY p.transaction_id
    )
    SELECT (x.created_at AT TIME ZONE 'Asia/Shanghai')::date AS day, x.region_code,
           count(*) FILTER (WHERE x.kind = 'charge'),
           COALESCE(SUM(l.revenue) FILTER (WHERE x.kind = 'charge'), 0),
           SUM(x.card_fen), SUM(x.coupon_fen), SUM(x.red_packet_fen),
           COALESCE(-SUM(l.balance) FILTER (WHERE x.kind = 'charge'), 0),
           COALESCE(-SUM(l.revenue) FILTER (WHERE x.kind = 'refund'), 0),
           COALESCE(-SUM(l.promotions), 0), COALESCE(-SUM(l.red_packets), 0)
    FROM rental_tx x JOIN legs l ON l.transaction_id = x.id
    GROUP BY 1, 2 ORDER BY 1, 2 NULLS LAST
    """
)


async def revenue(session: AsyncSession, since: datetime, until: datetime) -> list[RevenueRow]:
    rows = await session.execute(_REVENUE, {"since": since, "until": until})
    return [RevenueRow(row[0], row[1], *(int(v) for v in row[2:])) for row in rows.all()]


# What users owe now: per rental, the last charge attempt that failed (or waits for the user's provider), when
# no attempt settled and support did not waive it. Not a ledger account: an unpaid fee is never booked.
_OWED_BY_USERS = text(
    """
    SELECT COALESCE(SUM(amount_fen), 0), count(*) FROM (
        SELECT DISTINCT ON (c.rental_id) c.rental_id, c.amount_fen, c.status, c.failure_reason
        FROM charges c
        WHERE NOT EXISTS (SELECT 1 FROM charges s WHERE s.rental_id = c.rental_id AND s.status = 'settled')
          AND NOT EXISTS (SELECT 1 FROM waived_rentals w WHERE w.rental_id = c.rental_id)
        ORDER BY c.rental_id, c.created_at DESC
    ) last
    WHERE status IN ('failed', 'awaiting_provider') AND failure_reason IS DISTINCT FROM :already
    """
)


async def owed_by_users(session: AsyncSession, already_charged: str) -> tuple[int, int]:
    owed, rentals = (await session.execute(_OWED_BY_USERS, {"already": already_charged})).one()
    return int(owed), int(rentals)
