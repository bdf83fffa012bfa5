"""Unit tests of the settlement rules for virtual assets, and a property test of their books."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asset_credit_svc.assets.rules import (
    CardOffer,
    CouponOffer,
    RedPacketOffer,
    card_cover,
    charge_legs,
    plan,
)
from asset_credit_svc.ledger.math import AccountState, InsufficientFunds, plan_postings
from asset_credit_svc.ledger.service import (
    PLATFORM_PROMOTIONS,
    PLATFORM_REVENUE,
    AccountRef,
    user_balance,
    user_red_packet,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SOON = NOW + timedelta(days=1)
LATER = NOW + timedelta(days=30)
PAST = NOW - timedelta(seconds=1)


def aid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def test_the_largest_discount_wins_then_the_soonest_expiry() -> None:
    coupons = [
        CouponOffer(aid(1), LATER, amount_off_fen=100),
        CouponOffer(aid(2), LATER, percent_off=50, max_discount_fen=120),  # 120 of 400
        CouponOffer(aid(3), LATER, amount_off_fen=300, min_spend_fen=500),  # not reached
        CouponOffer(aid(4), SOON, percent_off=30),  # 120 of 400, expires sooner: wins the tie
    ]
    chosen = plan(400, None, NOW, coupons=coupons)
    assert chosen.coupon is not None
    assert (chosen.coupon.asset_id, chosen.coupon_fen, chosen.cash_fen) == (aid(4), 120, 280)
    assert plan(500, None, NOW, coupons=coupons).coupon_fen == 300  # minimum spend reached


def test_a_discount_never_makes_the_fee_negative_and_expired_assets_never_apply() -> None:
    assert plan(150, None, NOW, coupons=[CouponOffer(aid(1), LATER, amount_off_fen=1000)]).cash_fen == 0
    assert plan(150, None, NOW, coupons=[CouponOffer(aid(1), LATER, percent_off=100)]).cash_fen == 0
    expired = plan(
        150,
        600,
        NOW,
        cards=[CardOffer(aid(1), NOW, 60)],
        coupons=[CouponOffer(aid(2), PAST, amount_off_fen=100)],
        red_packets=[RedPacketOffer(aid(3), NOW, 500)],
    )
    assert (expired.card, expired.coupon, expired.red_packets, expired.cash_fen) == (None, None, (), 150)


def test_a_card_covers_its_share_of_the_rental_minutes() -> None:
    assert card_cover(300, 50 * 60, 60) == (300, 50)  # minutes for the whole rental: all of it
    assert card_cover(300, 40 * 60, 10) == (75, 10)  # 10 of 40 minutes: a quarter
    assert card_cover(300, 40 * 60 + 1, 10) == (73, 10)  # a started minute counts: 10 of 41
    assert card_cover(300, None, 60) == (0, 0)  # without the rental's timing no card applies
    assert card_cover(1, 100 * 60, 1) == (0, 0)  # a share worth nothing uses no minutes


def test_order_card_then_coupon_then_red_packets_then_balance() -> None:
    chosen = plan(
        600,
        60 * 60,
        NOW,
        cards=[CardOffer(aid(1), LATER, 15)],
        coupons=[CouponOffer(aid(2), LATER, percent_off=20, min_spend_fen=400)],
        red_packets=[RedPacketOffer(aid(3), LATER, 80), RedPacketOffer(aid(4), SOON, 50)],
    )
    assert chosen.card_fen == 150  # 15 of 60 minutes
    assert chosen.coupon_fen == 90  # 20 % of the 450 left (which reaches the minimum spend)
    assert [(a.asset_id, a.amount_fen) for a in chosen.red_packets] == [(aid(4), 50), (aid(3), 80)]
    assert chosen.cash_fen == 600 - 150 - 90 - 130
    legs = charge_legs(aid(9), chosen)
    assert legs == [
        (user_balance(aid(9)), -230),
        (user_red_packet(aid(9)), -130),
        (PLATFORM_PROMOTIONS, -240),
        (PLATFORM_REVENUE, 600),
    ]


def test_the_minimum_spend_is_checked_after_the_card() -> None:
    coupon = CouponOffer(aid(2), LATER, amount_off_fen=100, min_spend_fen=300)
    assert plan(300, 60 * 60, NOW, coupons=[coupon]).coupon_fen == 100
    assert plan(300, 60 * 60, NOW, cards=[CardOffer(aid(1), LATER, 30)], coupons=[coupon]).coupon_fen == 0


# ---- property: any mix of grants, expiries and charges keeps the books --------------------

USERS = [uuid.UUID(int=i) for i in range(1, 3)]
operation = st.one_of(
    st.tuples(st.just("top_up"), st.sampled_from(USERS), st.integers(1, 5000)),
    st.tuples(st.just("red_packet"), st.sampled_from(USERS), st.integers(1, 2000)),
    st.tuples(st.just("expire"), st.integers(0, 50)),
    st.tuples(
        st.just("charge"),
        st.sampled_from(USERS),
        st.integers(1, 5000),
        st.integers(0, 3 * 3600),
        st.integers(0, 120),  # card minutes
        st.integers(0, 500),  # coupon amount off (0: a percentage coupon)
        st.integers(1, 100),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=50))
def test_assets_and_charges_keep_the_books(ops) -> None:
    accounts: dict[AccountRef, AccountState] = {}
    packets: dict[uuid.UUID, list[RedPacketOffer]] = {u: [] for u in USERS}
    postings_total = 0

    def post(legs: list[tuple[AccountRef, int]]) -> None:
        nonlocal postings_total
        for account, _ in legs:
            accounts.setdefault(account, AccountState(0, account.allow_negative))
        for p in plan_postings(legs, accounts):
            accounts[p.account] = AccountState(p.balance_after_fen, p.account.allow_negative)
            postings_total += p.amount_fen

    for n, op in enumerate(ops):
        if op[0] == "top_up":
            post([(AccountRef("provider_clearing:alipay"), -op[2]), (user_balance(op[1]), op[2])])
        elif op[0] == "red_packet":
            post([(PLATFORM_PROMOTIONS, -op[2]), (user_red_packet(op[1]), op[2])])
            packets[op[1]].append(RedPacketOffer(uuid.uuid4(), NOW + timedelta(minutes=n), op[2]))
        elif op[0] == "expire":  # packets expiring before this point go back to promotions
            for user in USERS:
                kept = []
                for packet in packets[user]:
                    if packet.expires_at <= NOW + timedelta(minutes=op[1]):
                        post(
                            [
                                (user_red_packet(user), -packet.remaining_fen),
                                (PLATFORM_PROMOTIONS, packet.remaining_fen),
                            ]
                        )
                    else:
                        kept.append(packet)
                packets[user] = kept
        else:
            _, user, fee, duration, card_minutes, amount_off, percent = op
            coupon = (
                CouponOffer(aid(1), LATER, amount_off_fen=amount_off)
                if amount_off
                else CouponOffer(aid(1), LATER, percent_off=percent, max_discount_fen=300)
            )
            chosen = plan(
                fee,
                duration,
                NOW - timedelta(days=1),
                cards=[CardOffer(aid(2), LATER, card_minutes)],
                coupons=[coupon],
                red_packets=packets[user],
            )
            parts = (chosen.card_fen, chosen.coupon_fen, chosen.red_packet_fen, chosen.cash_fen)
            assert all(part >= 0 for part in parts)
            assert sum(parts) == fee
            before = accounts.get(user_balance(user), AccountState(0, False)).balance_fen
            if before < chosen.cash_fen:  # only the balance can be short, and then nothing moves
                with pytest.raises(InsufficientFunds) as short:
                    post(charge_legs(user, chosen))
                assert short.value.account == user_balance(user)
                continue
            post(charge_legs(user, chosen))
            spent = {a.asset_id: a.amount_fen for a in chosen.red_packets}
            packets[user] = [
                RedPacketOffer(p.asset_id, p.expires_at, p.remaining_fen - spent.get(p.asset_id, 0))
                for p in packets[user]
                if p.remaining_fen - spent.get(p.asset_id, 0) > 0
            ]
        for user in USERS:  # the red packet account holds exactly what its packets hold
            held = accounts.get(user_red_packet(user), AccountState(0, False)).balance_fen
            assert held == sum(p.remaining_fen for p in packets[user])

    assert postings_total == 0
    assert sum(state.balance_fen for state in accounts.values()) == 0
    for account, state in accounts.items():
        if not account.allow_negative:
            assert state.balance_fen >= 0
