"""Deposits for the regulator (T/CA006-2018 clause 5: sharing services' deposits are supervised): totals
held, refunds requested, paid, and how long paying took. Aggregates only; a group of fewer than
`K_ANONYMITY` operations is reported as -1 (count and amount), as MDS reports do with small counts."""

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.supervision import repository as repo
from analytics_svc.supervision.service import K_ANONYMITY


def _group(count: int, amount_fen: int, **extra: Any) -> dict[str, Any]:
    if count < K_ANONYMITY:
        return {"count": -1, "amount_fen": -1, **dict.fromkeys(extra)}
    return {"count": count, "amount_fen": int(amount_fen), **extra}


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)


async def now(session: AsyncSession) -> dict[str, Any]:
    holders, held = await repo.deposits_held(session)
    pending, pending_fen, oldest = await repo.refunds_pending(session)
    return {
        "currency": "CNY",
        "held": _group(holders, held),
        "refunds_pending": {**_group(pending, pending_fen), "oldest_requested_at": _ms(oldest)},
    }


async def month(session: AsyncSession, label: str, start: datetime, end: datetime) -> dict[str, Any]:
    row = await repo.deposits_in(session, start, end)
    paid, paid_fen, asked, asked_fen, refunded, refunded_fen, within_day, median, p95, longest = row
    return {
        "month": label,
        "currency": "CNY",
        "paid": _group(paid, paid_fen),
        "refunds_requested": _group(asked, asked_fen),
        "refunds_paid": _group(
            refunded,
            refunded_fen,
            within_24h=within_day,
            seconds_to_pay={"median": _seconds(median), "p95": _seconds(p95), "max": _seconds(longest)},
        ),
        "refunds_unpaid": _group(asked - refunded, asked_fen - refunded_fen),
    }


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)
