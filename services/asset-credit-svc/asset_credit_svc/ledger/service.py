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
        # promotions expense account (what promotions cost us) may go negative. Users' accounts
        # and the platform's revenue never do.
        return self.kind.startswith(AccountKind.PROVIDER_CLEARING + ":") or self.kind == AccountKind.PLATFORM_PROMOTIONS

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


@dataclass(frozen=True)
class PostedTransaction:
    id: uuid.UUID
    reference: str
    postings: list[PlannedPosting[AccountRef]]

    def balance_after(self, account: AccountRef) -> int:
        return next(p.balance_after_fen for p in self.postings if p.account == account)


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
    ids = {account: (await ensure(session, account))[0] for account, _ in legs}
    locked = {account: await repo.lock_account(session, ids[account]) for account in sorted(ids, key=ids.__getitem__)}
    planned = plan_postings(
        legs,
        {a: AccountState(balance_fen=la.balance_fen, allow_negative=la.allow_negative) for a, la in locked.items()},
    )
    transaction_id = await repo.insert_transaction(session, kind, reference)
    if transaction_id is None:  # a concurrent unit of work recorded the same reference first
        return None
    for posting in planned:
        account_id = ids[posting.account]
        await repo.insert_posting(session, transaction_id, account_id, posting.amount_fen, posting.balance_after_fen)
        await repo.set_balance(session, account_id, posting.balance_after_fen)
    return PostedTransaction(id=transaction_id, reference=reference, postings=planned)
