"""All ledger SQL. Core statements, not ORM objects, so a locked read is never served from a
stale identity map. Never commits."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import Account, LedgerTransaction, Posting


@dataclass(frozen=True)
class LockedAccount:
    id: uuid.UUID
    balance_fen: int
    allow_negative: bool


@dataclass(frozen=True)
class EntryRow:
    entry_id: int
    kind: str
    amount_fen: int
    balance_after_fen: int
    reference: str
    created_at: datetime


def _account_key(user_id: uuid.UUID | None, kind: str) -> list[ColumnElement[bool]]:
    return [Account.kind == kind, Account.user_id.is_(None) if user_id is None else Account.user_id == user_id]


async def find_account(session: AsyncSession, user_id: uuid.UUID | None, kind: str) -> tuple[uuid.UUID, int] | None:
    row = (await session.execute(select(Account.id, Account.balance_fen).where(*_account_key(user_id, kind)))).first()
    return None if row is None else (row.id, row.balance_fen)


async def user_balances(session: AsyncSession, user_id: uuid.UUID, kinds: list[str]) -> dict[str, int]:
    """The balances of a user's accounts of these kinds in one statement; a missing account holds 0."""
    rows = (
        await session.execute(
            select(Account.kind, Account.balance_fen).where(Account.user_id == user_id, Account.kind.in_(kinds))
        )
    ).all()
    found = {row.kind: row.balance_fen for row in rows}
    return {kind: found.get(kind, 0) for kind in kinds}


async def ensure_account(
    session: AsyncSession, user_id: uuid.UUID | None, kind: str, *, allow_negative: bool
) -> tuple[uuid.UUID, int]:
    """The account's (id, balance), created with a zero balance when it does not exist yet.
    Concurrent creators meet on the unique index; one row wins."""
    if (found := await find_account(session, user_id, kind)) is not None:
        return found
    stmt = insert(Account).values(id=uuid.uuid4(), user_id=user_id, kind=kind, allow_negative=allow_negative)
    if user_id is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["kind"], index_where=Account.user_id.is_(None))
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["user_id", "kind"], index_where=Account.user_id.isnot(None))
    await session.execute(stmt)
    found = await find_account(session, user_id, kind)
    assert found is not None
    return found


AccountKey = tuple[uuid.UUID | None, str]  # (user_id or None for a system account, kind)


async def find_accounts(session: AsyncSession, keys: list[AccountKey]) -> dict[AccountKey, uuid.UUID]:
    """The ids of those of these accounts that exist, in one statement."""
    matches = or_(*(and_(*_account_key(user_id, kind)) for user_id, kind in keys))
    rows = (await session.execute(select(Account.id, Account.user_id, Account.kind).where(matches))).all()
    return {(row.user_id, row.kind): row.id for row in rows}


async def lock_accounts(session: AsyncSession, account_ids: list[uuid.UUID]) -> dict[uuid.UUID, LockedAccount]:
    """Lock the accounts in one statement, in id order (the rows are locked as they leave the sort),
    so two transactions never wait for each other in a cycle."""
    rows = (
        await session.execute(
            select(Account.id, Account.balance_fen, Account.allow_negative)
            .where(Account.id.in_(account_ids))
            .order_by(Account.id)
            .with_for_update()
        )
    ).all()
    return {row.id: LockedAccount(row.id, row.balance_fen, row.allow_negative) for row in rows}


async def insert_postings(
    session: AsyncSession, transaction_id: uuid.UUID, postings: list[tuple[uuid.UUID, int, int]]
) -> None:
    """The transaction's postings (account id, amount, balance after; one per account) in one
    statement, and the accounts' new balances in another."""
    await session.execute(
        insert(Posting).values(
            [
                {
                    "transaction_id": transaction_id,
                    "account_id": account_id,
                    "amount_fen": amount_fen,
                    "balance_after_fen": balance_after_fen,
                }
                for account_id, amount_fen, balance_after_fen in postings
            ]
        )
    )
    new_balance = case({account_id: balance for account_id, _, balance in postings}, value=Account.id)
    await session.execute(
        update(Account)
        .where(Account.id.in_([account_id for account_id, _, _ in postings]))
        .values(balance_fen=new_balance, updated_at=func.now())
    )


async def transaction_id_by_reference(session: AsyncSession, reference: str) -> uuid.UUID | None:
    result = await session.execute(select(LedgerTransaction.id).where(LedgerTransaction.reference == reference))
    return result.scalar_one_or_none()


async def insert_transaction(session: AsyncSession, kind: str, reference: str) -> uuid.UUID | None:
    """The new transaction's id, or None when `reference` is already recorded."""
    stmt = (
        insert(LedgerTransaction)
        .values(id=uuid.uuid4(), kind=kind, reference=reference)
        .on_conflict_do_nothing(index_elements=["reference"])
        .returning(LedgerTransaction.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_entries(
    session: AsyncSession, user_id: uuid.UUID, kind: str, *, limit: int, before: int | None
) -> list[EntryRow]:
    """A page of the postings of the user's account of `kind`, newest first (none when it does not
    exist): one statement, as clients poll it. The account is a scalar subquery (an init plan), so the
    postings come newest first straight from the (account_id, id DESC) index, however many there are."""
    account_id = select(Account.id).where(*_account_key(user_id, kind)).scalar_subquery()
    stmt = (
        select(
            Posting.id,
            LedgerTransaction.kind,
            Posting.amount_fen,
            Posting.balance_after_fen,
            LedgerTransaction.reference,
            Posting.created_at,
        )
        .join(LedgerTransaction, LedgerTransaction.id == Posting.transaction_id)
        .where(Posting.account_id == account_id)
        .order_by(Posting.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(Posting.id < before)
    rows = (await session.execute(stmt)).all()
    return [
        EntryRow(entry_id=r[0], kind=r[1], amount_fen=r[2], balance_after_fen=r[3], reference=r[4], created_at=r[5])
        for r in rows
    ]
