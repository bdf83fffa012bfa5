"""Posting to the ledger: the one way money moves.

`post` locks every account a transaction touches (in id order, so two transactions never wait
for each other in a cycle), plans the postings with the pure rules of `ledger.math`, and writes
the transaction, its postings and the new balances in the caller's unit of work. A reference
(`topup:<id>`, `charge:<id>`) is recorded once: posting it again returns None and changes nothing.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.ledger import repository as repo
from asset_credit_svc.ledger.math import AccountState, PlannedPosting, check_legs, plan_postings
from asset_credit_svc.models import AccountKind


@dataclass(frozen=True, order=True)
class AccountRef:
    kind: str
    user_id: uuid.UUID | None = None

    @property
    def allow_negative(self) -> bool:
        # Only an external counterparty's clearing account (what the provider owes us) and the
        # expense accounts (what promotions and the channels' fees cost us) may go negative. Users' accounts
        # and the platform's revenue never do.
        return self.kind.startswith(AccountKind.PROVIDER_CLEARING + ":") or self.kind in (
            AccountKind.PLATFORM_PROMOTIONS,
            AccountKind.PLATFORM_PROVIDER_FEES,
        )

    def __str__(self) -> str:
        return self.kind if self.user_id is None else f"{self.kind}:{self.user_id}"


def user_balance(user_id: uuid.UUID) -> AccountRef:
    return AccountRef(AccountKind.USER_BALANCE, user_id)


def provider_clearing(channel: str) -> AccountRef:
    return AccountRef(AccountKind.provider_clearing(channel))


def user_red_packet(user_id: uuid.UUID) -> AccountRef:
    return AccountRef(AccountKind.USER_RED_PACKET, user_id)


PLATFORM_REVENUE = AccountRef(AccountKind.PLATFORM_REVENUE)
PLATFORM_PROMOTIONS = AccountRef(AccountKind.PLATFORM_PROMOTIONS)
PLATFORM_PROVIDER_FEES = AccountRef(AccountKind.PLATFORM_PROVIDER_FEES)


@dataclass(frozen=True)
class PostedTransaction:
    id: uuid.UUID
    reference: str
    postings: list[PlannedPosting[AccountRef]]

    def balance_after(self, account: AccountRef) -> int:
        return next(p.balance_after_fen for p in self.postings if p.account == account)

    def touches(self, account: AccountRef) -> bool:
        return any(p.account == account for p in self.postings)


async def ensure(session: AsyncSession, account: AccountRef) -> tuple[uuid.UUID, int]:
    return await repo.ensure_account(session, account.user_id, account.kind, allow_negative=account.allow_negative)


async def balance_of(session: AsyncSession, account: AccountRef) -> int:
    """The committed balance (creates the account with zero when it does not exist)."""
    _, balance = await ensure(session, account)
    return balance


async def post(
    session: AsyncSession, *, kind: str, reference: str, legs: Sequence[tuple[AccountRef, int]]
) -> PostedTransaction | None:
    """Record one balanced transaction; None when `reference` was already posted.

    Raises `ledger.math.InsufficientFunds` (and other `LedgerError`s) before writing anything."""
    check_legs(legs)
    if await repo.transaction_id_by_reference(session, reference) is not None:
        return None
    ids = await _account_ids(session, [account for account, _ in legs])
    locked = await repo.lock_accounts(session, list(ids.values()))
    planned = plan_postings(
        legs,
        {
            account: AccountState(locked[ids[account]].balance_fen, locked[ids[account]].allow_negative)
            for account in ids
        },
    )
    transaction_id = await repo.insert_transaction(session, kind, reference)
    if transaction_id is None:  # a concurrent unit of work recorded the same reference first
        return None
    await repo.insert_postings(
        session, transaction_id, [(ids[p.account], p.amount_fen, p.balance_after_fen) for p in planned]
    )
    return PostedTransaction(id=transaction_id, reference=reference, postings=planned)


async def _account_ids(session: AsyncSession, accounts: list[AccountRef]) -> dict[AccountRef, uuid.UUID]:
    """The accounts' ids in one lookup; an account that does not exist yet is created (rare)."""
    found = await repo.find_accounts(session, [(a.user_id, a.kind) for a in accounts])
    ids: dict[AccountRef, uuid.UUID] = {}
    for account in accounts:
        account_id = found.get((account.user_id, account.kind))
        ids[account] = account_id if account_id is not None else (await ensure(session, account))[0]
    return ids
