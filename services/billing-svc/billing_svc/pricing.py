"""The fee of a rental: pure arithmetic on integer fen, no I/O.

Rule (what the user is shown before borrowing, `GET /v1/pricing`):

- A rental of at most `free_minutes` (inclusive) costs nothing.
- Otherwise the whole duration is charged, from the start (the free minutes are a grace period,
  not a deduction): the duration is cut into consecutive 24 h windows counted from the start;
  in each window every *started* period of `period_minutes` costs `price_per_period_fen`, and a
  window never costs more than `daily_cap_fen`.

  fee = full_days * min(cap, ceil(86400 / period) * price)
      + min(cap, ceil(remainder / period) * price)        where remainder = duration mod 86400

  With the default 30-minute period (which divides a day) this is exactly "ceil(duration / period)
  periods, each 24 h window capped at the daily cap".

- With a purchase ceiling, the fee never exceeds it (the bank is then the user's).

Properties (checked by property tests): monotonic non-decreasing in the duration; never above
ceil(duration / 24 h) * daily_cap; zero within the free minutes.
"""

from dataclasses import dataclass

DAY_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class Price:
    period_minutes: int
    price_per_period_fen: int
    free_minutes: int
    daily_cap_fen: int
    # An unreturned bank whose fee reaches this is sold to the user: the fee never exceeds it.
    purchase_ceiling_fen: int | None = None

    def __post_init__(self) -> None:
        if self.period_minutes <= 0:
            raise ValueError("period_minutes must be positive")
        if self.price_per_period_fen < 0 or self.daily_cap_fen < 0 or self.free_minutes < 0:
            raise ValueError("prices, caps and free minutes cannot be negative")
        if self.purchase_ceiling_fen is not None and self.purchase_ceiling_fen < 0:
            raise ValueError("the purchase ceiling cannot be negative")


def _window_fee(seconds: int, price: Price) -> int:
    period_s = price.period_minutes * 60
    periods = -(-seconds // period_s)  # ceil for non-negative ints, no floats
    return min(price.daily_cap_fen, periods * price.price_per_period_fen)


def compute_fee(duration_seconds: int, price: Price) -> int:
    """The fee in fen for a rental that lasted `duration_seconds` (negative counts as 0)."""
    duration = max(0, int(duration_seconds))
    if duration <= price.free_minutes * 60:
        return 0
    full_days, remainder = divmod(duration, DAY_SECONDS)
    fee = full_days * _window_fee(DAY_SECONDS, price) + _window_fee(remainder, price)
    if price.purchase_ceiling_fen is not None:
        fee = min(fee, price.purchase_ceiling_fen)
    return fee
