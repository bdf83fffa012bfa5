"""Unit tests of the ledger rules, including a property test over random top-ups and charges."""

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asset_credit_svc.ledger.math import (
    AccountState,
    InsufficientFunds,
    PlannedPosting,
    UnbalancedTransaction,
    plan_postings,
)
from asset_credit_svc.ledger.service import PLATFORM_REVENUE, AccountRef, provider_clearing, user_balance


def states(**balances: int) -> dict[str, AccountState]:
    return {k: AccountState(v, allow_negative=k.startswith("clearing")) for k, v in balances.items()}


def test_plan_postings_moves_money() -> None:
    planned = plan_postings([("clearing", -500), ("wallet", 500)], states(clearing=0, wallet=100))
    assert planned == [PlannedPosting("clearing", -500, -500), PlannedPosting("wallet", 500, 600)]


@pytest.mark.parametrize(
    "legs",
    [
        [("a", 100)],
        [("a", 100), ("b", -99)],
        [("a", 100), ("a", -100)],
        [("a", 0), ("b", 0)],
        [],
    ],
)
def test_plan_postings_refuses_malformed_transactions(legs) -> None:
    with pytest.raises(UnbalancedTransaction):
        plan_postings(legs, states(a=1000, b=1000))


def test_plan_postings_refuses_overdraft_and_allows_exact_balance() -> None:
    with pytest.raises(InsufficientFunds) as info:
        plan_postings([("wallet", -101), ("revenue", 101)], states(wallet=100, revenue=0))
    assert info.value.balance_fen == 100 and info.value.amount_fen == 101
    assert plan_postings([("wallet", -100), ("revenue", 100)], states(wallet=100, revenue=0))[0].balance_after_fen == 0


def test_account_refs() -> None:
    user = uuid.uuid4()
    assert not user_balance(user).allow_negative
    assert not PLATFORM_REVENUE.allow_negative
    assert provider_clearing("alipay").allow_negative
    assert provider_clearing("alipay").kind == "provider_clearing:alipay"


class ModelLedger:
    """The ledger's bookkeeping in memory, driven through the same `plan_postings` as the database."""

    def __init__(self) -> None:
        self.accounts: dict[AccountRef, AccountState] = {}
        self.transactions: dict[str, list[PlannedPosting[AccountRef]]] = {}

    def state(self, account: AccountRef) -> AccountState:
        return self.accounts.setdefault(account, AccountState(0, account.allow_negative))

    def post(self, reference: str, legs: list[tuple[AccountRef, int]]) -> bool:
        if reference in self.transactions:
            return False
        planned = plan_postings(legs, {a: self.state(a) for a, _ in legs})
        for p in planned:
            self.accounts[p.account] = AccountState(p.balance_after_fen, p.account.allow_negative)
        self.transactions[reference] = planned
        return True


USERS = [uuid.UUID(int=i) for i in range(1, 4)]
operation = st.one_of(
    st.tuples(
        st.just("top_up"), st.sampled_from(USERS), st.integers(1, 1_000_000), st.sampled_from(["alipay", "wechat"])
    ),
    st.tuples(st.just("charge"), st.sampled_from(USERS), st.integers(0, 1_500_000), st.integers(0, 20)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_random_top_ups_and_charges_keep_the_books(ops) -> None:
    ledger = ModelLedger()
    expected = dict.fromkeys(USERS, 0)
    settled_revenue = 0
    for i, op in enumerate(ops):
        if op[0] == "top_up":
            _, user, amount, channel = op
            assert ledger.post(f"topup:{i}", [(provider_clearing(channel), -amount), (user_balance(user), amount)])
            expected[user] += amount
        else:
            _, user, amount, charge_no = op
            reference = f"charge:{user}:{charge_no}"
            if amount == 0:
                continue
            before = ledger.state(user_balance(user)).balance_fen
            try:
                posted = ledger.post(reference, [(user_balance(user), -amount), (PLATFORM_REVENUE, amount)])
            except InsufficientFunds:
                assert before < amount  # refused only when short
                assert ledger.state(user_balance(user)).balance_fen == before  # and nothing moved
                continue
            assert before >= amount or not posted
            if posted:
                expected[user] -= amount
                settled_revenue += amount
            else:  # a repeated charge reference changes nothing
                assert ledger.state(user_balance(user)).balance_fen == before

    for postings in ledger.transactions.values():
        assert sum(p.amount_fen for p in postings) == 0
        assert len(postings) == 2
    for account, state in ledger.accounts.items():
        if not account.allow_negative:
            assert state.balance_fen >= 0
        chain = [p for ps in ledger.transactions.values() for p in ps if p.account == account]
        assert sum(p.amount_fen for p in chain) == state.balance_fen
        if chain:
            assert chain[-1].balance_after_fen == state.balance_fen
    assert sum(s.balance_fen for s in ledger.accounts.values()) == 0
    for user in USERS:
        assert ledger.state(user_balance(user)).balance_fen == expected[user]
    assert ledger.state(PLATFORM_REVENUE).balance_fen == settled_revenue
