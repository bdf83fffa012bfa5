"""Pure ledger arithmetic, shared by the database path and the property tests.

`plan_postings` turns the legs of one transaction and the current (locked) balances of the
accounts it touches into postings with their balance after, or refuses the whole transaction.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

BIGINT_MAX = 2**63 - 1


class LedgerError(Exception):
    """A transaction the ledger refuses; nothing of it is written."""


class UnbalancedTransaction(LedgerError):
    """The legs do not sum to zero, repeat an account, carry a zero amount, or are fewer than two."""


class InsufficientFunds(LedgerError):
    def __init__(self, account: object, balance_fen: int, amount_fen: int) -> None:
        super().__init__(f"account {account} holds {balance_fen} fen; cannot move {amount_fen} fen")
        self.account = account
        self.balance_fen = balance_fen
        self.amount_fen = amount_fen


class BalanceOverflow(LedgerError):
    pass


@dataclass(frozen=True)
class AccountState:
    balance_fen: int
    allow_negative: bool


@dataclass(frozen=True)
class PlannedPosting(Generic[K]):
    account: K
    amount_fen: int
    balance_after_fen: int


def check_legs(legs: Sequence[tuple[K, int]]) -> None:
    """Refuse a malformed transaction before touching any account."""
    if len(legs) < 2:
        raise UnbalancedTransaction("a transaction needs at least two postings")
    accounts = [account for account, _ in legs]
    if len(set(accounts)) != len(accounts):
        raise UnbalancedTransaction("a transaction posts to each account at most once")
    for _, amount in legs:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise UnbalancedTransaction("amounts are integer fen")
        if amount == 0:
            raise UnbalancedTransaction("a posting moves a non-zero amount")
        if abs(amount) > BIGINT_MAX:
            raise BalanceOverflow("amount out of range")
    if sum(amount for _, amount in legs) != 0:
        raise UnbalancedTransaction("postings must sum to zero")


def plan_postings(legs: Sequence[tuple[K, int]], balances: Mapping[K, AccountState]) -> list[PlannedPosting[K]]:
    """The postings of one transaction, in the order of `legs`, or an error and nothing."""
    check_legs(legs)
    planned: list[PlannedPosting[K]] = []
    for account, amount in legs:
        state = balances[account]
        after = state.balance_fen + amount
        if after < 0 and not state.allow_negative:
            raise InsufficientFunds(account, state.balance_fen, -amount)
        if abs(after) > BIGINT_MAX:
            raise BalanceOverflow(f"balance of {account} out of range")
        planned.append(PlannedPosting(account=account, amount_fen=amount, balance_after_fen=after))
    return planned
