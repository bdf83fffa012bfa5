"""compute_fee: exact examples and properties (no I/O)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_svc.pricing import DAY_SECONDS, Price, compute_fee

DEFAULT = Price(period_minutes=30, price_per_period_fen=150, free_minutes=0, daily_cap_fen=2000)

prices = st.builds(
    Price,
    period_minutes=st.integers(1, 24 * 60),
    price_per_period_fen=st.integers(0, 10_000),
    free_minutes=st.integers(0, 24 * 60),
    daily_cap_fen=st.integers(0, 100_000),
)
durations = st.integers(0, 30 * DAY_SECONDS)


@pytest.mark.parametrize(
    ("seconds", "fee"),
    [
        (0, 0),
        (1, 150),
        (30 * 60, 150),
        (30 * 60 + 1, 300),
        (60 * 60, 300),
        (6 * 60 * 60, 1800),
        (6 * 60 * 60 + 1, 1950),
        (7 * 60 * 60, 2000),  # 14 periods = 2100, capped
        (DAY_SECONDS, 2000),
        (DAY_SECONDS + 1, 2150),
        (DAY_SECONDS + 30 * 60, 2150),
        (2 * DAY_SECONDS, 4000),
        (3 * DAY_SECONDS - 1, 6000),
        (-5, 0),
    ],
)
def test_default_price_examples(seconds: int, fee: int) -> None:
    assert compute_fee(seconds, DEFAULT) == fee


def test_free_minutes_are_a_grace_period_not_a_deduction() -> None:
    price = Price(period_minutes=30, price_per_period_fen=150, free_minutes=5, daily_cap_fen=2000)
    assert compute_fee(5 * 60, price) == 0
    assert compute_fee(5 * 60 + 1, price) == 150
    assert compute_fee(31 * 60, price) == 300


def test_period_not_dividing_a_day_restarts_each_window() -> None:
    price = Price(period_minutes=7 * 60, price_per_period_fen=100, free_minutes=0, daily_cap_fen=10_000)
    assert compute_fee(DAY_SECONDS, price) == 400  # ceil(24/7) = 4 periods in the first window
    assert compute_fee(DAY_SECONDS + 1, price) == 500  # a new window, its first period started


def test_invalid_price_is_refused() -> None:
    with pytest.raises(ValueError):
        Price(period_minutes=0, price_per_period_fen=1, free_minutes=0, daily_cap_fen=1)
    with pytest.raises(ValueError):
        Price(period_minutes=30, price_per_period_fen=-1, free_minutes=0, daily_cap_fen=1)


@given(prices, durations, durations)
def test_monotonic_in_duration(price: Price, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert compute_fee(low, price) <= compute_fee(high, price)


@given(prices, durations)
def test_never_above_daily_cap_per_started_day(price: Price, seconds: int) -> None:
    assert 0 <= compute_fee(seconds, price) <= math.ceil(seconds / DAY_SECONDS) * price.daily_cap_fen


@given(prices, st.data())
def test_zero_within_free_minutes(price: Price, data: st.DataObject) -> None:
    seconds = data.draw(st.integers(0, price.free_minutes * 60))
    assert compute_fee(seconds, price) == 0


DAY_DIVISORS = [m for m in range(1, 24 * 60 + 1) if (24 * 60) % m == 0]


@given(prices, durations)
def test_never_above_started_periods_when_the_period_divides_a_day(price: Price, seconds: int) -> None:
    # With a period that does not divide 24 h a new window restarts its first period early, so this
    # bound holds exactly for dividing periods (the default 30 min among them).
    price = Price(
        period_minutes=DAY_DIVISORS[price.period_minutes % len(DAY_DIVISORS)],
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
    )
    periods = math.ceil(seconds / (price.period_minutes * 60))
    assert compute_fee(seconds, price) <= periods * price.price_per_period_fen


@given(durations)
def test_default_price_is_ceil_periods_capped_per_day(seconds: int) -> None:
    full_days, rest = divmod(seconds, DAY_SECONDS)
    expected = full_days * 2000 + min(2000, math.ceil(rest / 1800) * 150)
    assert compute_fee(seconds, DEFAULT) == expected
