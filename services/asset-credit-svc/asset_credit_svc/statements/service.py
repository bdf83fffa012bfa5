"""Reconciling a channel's daily statement with our records. The statement is the channel's day in Beijing
time. Each of its lines is looked up by number among ours (any day): not ours, or ours but not settled, is
`missing_on_our_side`; another amount is `amount_differs`. Each of our settled items of that day is looked
for in every stored statement of the channel (an item paid at 23:59:59 may be on the next day's): absent
is `missing_on_their_side`, until a later statement lists it and the day is reconciled again. The daily
job reconciles the last two days on every run, so such an item clears itself. Nothing is fixed: finance
reads the mismatches (docs/money.md "Daily statements")."""

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.models import StatementMismatch, StatementRun, TransactionKind
from asset_credit_svc.payments.providers import (
    PaymentProvider,
    PaymentProviderError,
    StatementLine,
    StatementNotReady,
    StatementSource,
)
from asset_credit_svc.statements import repository
from kit.app import Runtime
from kit.db import unit_of_work

log = logging.getLogger(__name__)

BEIJING = timezone(timedelta(hours=8))


def day_window(bill_date: date) -> tuple[datetime, datetime]:
    start = datetime.combine(bill_date, time(), tzinfo=BEIJING)
    return start, start + timedelta(days=1)


def statement_sources(providers: Mapping[str, PaymentProvider]) -> dict[str, StatementSource]:
    return {channel: p for channel, p in providers.items() if isinstance(p, StatementSource)}


async def reconcile(
    session: AsyncSession, channel: str, bill_date: date, lines: list[StatementLine]
) -> tuple[StatementRun, list[StatementMismatch]]:
    """Store the statement and replace the day's result: the same statement twice gives the same result."""
    await repository.lock_day(session, channel, bill_date)
    await repository.store_lines(session, channel, bill_date, lines)
    since, until = day_window(bill_date)
    theirs = {f"{line.kind}:{line.number}": line for line in lines}
    ours = {
        f"{item.kind}:{item.number}": item
        for item in await repository.our_items(session, channel, since, until, list(theirs))
    }
    mismatches: list[StatementMismatch] = []

    def mismatch(key: str, problem: str, line: StatementLine | None) -> None:
        kind, _, number = key.partition(":")
        item = ours.get(key)
        mismatches.append(
            StatementMismatch(
                channel=channel,
                bill_date=bill_date,
                kind=kind,
                number=number,
                problem=problem,
                our_amount_fen=item.amount_fen if item else None,
                our_status=item.status if item else None,
                their_amount_fen=line.amount_fen if line else None,
                trade_no=line.trade_no if line else None,
            )
        )

    for key, line in theirs.items():
        item = ours.get(key)
        if item is None or not item.settled:
            mismatch(key, "missing_on_our_side", line)
        elif item.amount_fen != line.amount_fen:
            mismatch(key, "amount_differs", line)
    in_window = {
        key: item for key, item in ours.items() if item.settled and item.at is not None and since <= item.at < until
    }
    unlisted = set(in_window) - set(theirs)
    listed_elsewhere = await repository.listed_keys(session, channel, sorted(unlisted))
    for key in sorted(unlisted - listed_elsewhere):
        mismatch(key, "missing_on_their_side", None)
    run = StatementRun(
        channel=channel,
        bill_date=bill_date,
        reconciled_at=datetime.now(UTC),
        lines=len(lines),
        statement_payments_fen=sum(line.amount_fen for line in lines if line.kind == "payment"),
        statement_refunds_fen=sum(line.amount_fen for line in lines if line.kind == "refund"),
        statement_fees_fen=sum(line.fee_fen if line.kind == "payment" else -line.fee_fen for line in lines),
        our_payments_fen=sum(i.amount_fen for i in in_window.values() if i.kind == "payment"),
        our_refunds_fen=sum(i.amount_fen for i in in_window.values() if i.kind == "refund"),
        mismatches=len(mismatches),
    )
    await repository.replace_result(session, run, mismatches)
    await book_fees(session, channel, bill_date, run.statement_fees_fen)
    if mismatches:
        log.warning(
            "statement mismatches", extra={"channel": channel, "bill_date": str(bill_date), "count": len(mismatches)}
        )
    return run, mismatches


async def book_fees(session: AsyncSession, channel: str, bill_date: date, fees_fen: int) -> int:
    """Book the day's fees the statement gives (payments' fees less those given back with refunds) in the ledger:
    the channel keeps them, so what it owes us (its clearing account) shrinks and the fees expense grows. Under
    the day's lock: what is booked already for the channel's day is subtracted, so a statement imported again
    books nothing and a corrected one books only the difference (`provider_fee:<channel>:<date>:<n>`)."""
    prefix = f"provider_fee:{channel}:{bill_date.isoformat()}:"
    booked, count = await repository.fees_booked(session, prefix)
    difference = fees_fen - booked
    if difference:
        await ledger.post(
            session,
            kind=TransactionKind.PROVIDER_FEE.value,
            reference=f"{prefix}{count + 1}",
            legs=[(ledger.PLATFORM_PROVIDER_FEES, -difference), (ledger.provider_clearing(channel), difference)],
        )
    return difference


async def reconcile_recent_days(
    runtime: Runtime, providers: Mapping[str, PaymentProvider], days: int = 2, today: date | None = None
) -> int:
    """The daily job: the last `days` complete days of every channel with statements; a statement not
    ready yet or a channel away is tried again at the next turn. Returns how many days were reconciled."""
    today = today or datetime.now(BEIJING).date()
    done = 0
    for channel, source in statement_sources(providers).items():
        for back in range(days, 0, -1):
            bill_date = today - timedelta(days=back)
            try:
                lines = await source.statement(bill_date)
            except StatementNotReady:
                continue
            except PaymentProviderError as exc:
                log.warning(
                    "statement not fetched", extra={"channel": channel, "bill_date": str(bill_date), "error": str(exc)}
                )
                continue
            async with unit_of_work(runtime.sessionmaker) as session:
                await reconcile(session, channel, bill_date, lines)
            done += 1
    return done
