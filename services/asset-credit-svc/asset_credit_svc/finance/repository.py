"""The ledger summed per account kind (a counterparty's kind carries its channel: `provider_clearing:alipay`)
and per transaction kind, for a period. Every total is a sum of postings, so the report reconciles with the
ledger by construction: the kinds' closing balances add up to zero, and equal the accounts' balances."""

from dataclasses import dataclass
from datetime import datetime

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
