"""Wallet reads. The wallet (a `user_balance` account) is created lazily on first use."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.deposit.service import deposit_account
from asset_credit_svc.ledger import repository as ledger_repo
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.repository import EntryRow
from asset_credit_svc.wallet import repository
from asset_credit_svc.wallet.repository import MovementRow
from kit.pagination import decode_cursor, encode_cursor


async def balance(session: AsyncSession, user_id: uuid.UUID) -> int:
    return await ledger.balance_of(session, ledger.user_balance(user_id))


async def summary(session: AsyncSession, user_id: uuid.UUID) -> tuple[int, int, int]:
    """(balance, red packets, deposit held) without creating any account: reads only."""
    kinds = [ledger.user_balance(user_id).kind, ledger.user_red_packet(user_id).kind, deposit_account(user_id).kind]
    found = await ledger_repo.user_balances(session, user_id, kinds)
    return found[kinds[0]], found[kinds[1]], found[kinds[2]]


async def red_packets(session: AsyncSession, user_id: uuid.UUID) -> int:
    found = await ledger_repo.find_account(session, user_id, ledger.user_red_packet(user_id).kind)
    return 0 if found is None else found[1]


async def entries(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, before: int | None
) -> tuple[list[EntryRow], int | None]:
    """One page of the wallet's postings, newest first, and the cursor of the next page."""
    kind = ledger.user_balance(user_id).kind
    rows = await ledger_repo.list_entries(session, user_id, kind, limit=limit + 1, before=before)
    page = rows[:limit]
    next_before = page[-1].entry_id if len(rows) > limit else None
    return page, next_before


async def movements(
    session: AsyncSession, user_id: uuid.UUID, *, kinds: tuple[str, ...], limit: int, before: str | None
) -> tuple[list[MovementRow], str | None]:
    """One page of the user's top-ups, withdrawals and refunds, newest first, and the next page's cursor."""
    cursor = None if before is None else decode_cursor(before, detail="`before` must be a `next_before` value")
    rows = await repository.movements(session, user_id, kinds=kinds, limit=limit + 1, before=cursor)
    page = rows[:limit]
    next_before = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return page, next_before
