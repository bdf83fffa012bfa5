"""Which virtual assets cover a fee, and how much: pure arithmetic on integer fen, no I/O.

Order (docs/money.md): a card, then a coupon, then red packets; the balance pays the rest.

- Card (free minutes): one card per rental, the one covering most (then expiring soonest). It
  covers `min(card minutes left, rental minutes)` of the rental's minutes (started minutes,
  ceil(duration / 60)) and pays that share of the fee, rounded down: the whole fee when it has
  minutes for the whole rental. Billing's price rules stay in billing: only the fee and the
  duration are needed.
- Coupon: at most one per rental. It applies when the fee left after the card reaches its
  minimum spend. Amount off: that amount; percentage off: the percentage of what is left, rounded
  down, capped by its maximum discount. Never more than what is left. The largest discount wins,
  then the one expiring soonest.
- Red packets: spent soonest-expiring first until nothing is left to pay.

An asset expiring at or before `now` never applies. Nothing makes the fee negative.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from asset_credit_svc.ledger.service import (
    PLATFORM_PROMOTIONS,
    PLATFORM_REVENUE,
    AccountRef,
    user_balance,
    user_red_packet,
)


@dataclass(frozen=True)
class CardOffer:
    asset_id: uuid.UUID
    expires_at: datetime
    minutes_remaining: int


@dataclass(frozen=True)
class CouponOffer:
    asset_id: uuid.UUID
    expires_at: datetime
    min_spend_fen: int = 0
    amount_off_fen: int | None = None
    percent_off: int | None = None
    max_discount_fen: int | None = None

    def discount(self, fee_fen: int) -> int:
        if fee_fen <= 0 or fee_fen < self.min_spend_fen:
            return 0
        if self.amount_off_fen is not None:
            off = self.amount_off_fen
        else:
            off = fee_fen * (self.percent_off or 0) // 100
            if self.max_discount_fen is not None:
                off = min(off, self.max_discount_fen)
        return max(0, min(off, fee_fen))


@dataclass(frozen=True)
class RedPacketOffer:
    asset_id: uuid.UUID
    expires_at: datetime
    remaining_fen: int


@dataclass(frozen=True)
class Application:
    asset_id: uuid.UUID
    amount_fen: int
    minutes: int = 0


@dataclass(frozen=True)
class Plan:
    fee_fen: int
    card: Application | None = None
    coupon: Application | None = None
    red_packets: tuple[Application, ...] = field(default_factory=tuple)

    @property
    def card_fen(self) -> int:
        return self.card.amount_fen if self.card else 0

    @property
    def coupon_fen(self) -> int:
        return self.coupon.amount_fen if self.coupon else 0

    @property
    def red_packet_fen(self) -> int:
        return sum(a.amount_fen for a in self.red_packets)

    @property
    def cash_fen(self) -> int:
        """What the balance (or the user's provider) pays."""
        return self.fee_fen - self.card_fen - self.coupon_fen - self.red_packet_fen


def rental_minutes(duration_seconds: int) -> int:
    return -(-max(0, duration_seconds) // 60)


def card_cover(fee_fen: int, duration_seconds: int | None, minutes_remaining: int) -> tuple[int, int]:
    """(fen covered, minutes used) of a card with `minutes_remaining` for this rental."""
    if duration_seconds is None or fee_fen <= 0 or minutes_remaining <= 0:
        return 0, 0
    minutes = rental_minutes(duration_seconds)
    if minutes == 0:
        return 0, 0
    used = min(minutes_remaining, minutes)
    covered = fee_fen if used == minutes else fee_fen * used // minutes
    return (covered, used) if covered > 0 else (0, 0)


def plan(
    fee_fen: int,
    duration_seconds: int | None,
    now: datetime,
    *,
    cards: Sequence[CardOffer] = (),
    coupons: Sequence[CouponOffer] = (),
    red_packets: Sequence[RedPacketOffer] = (),
) -> Plan:
    if fee_fen <= 0:
        return Plan(fee_fen=max(0, fee_fen))
    left = fee_fen

    card: Application | None = None
    best_card: tuple[int, datetime, uuid.UUID] | None = None
    for offer in cards:
        if offer.expires_at <= now:
            continue
        covered, used = card_cover(left, duration_seconds, offer.minutes_remaining)
        if covered == 0:
            continue
        rank = (-covered, offer.expires_at, offer.asset_id)
        if best_card is None or rank < best_card:
            best_card = rank
            card = Application(offer.asset_id, covered, used)
    left -= card.amount_fen if card else 0

    coupon: Application | None = None
    best_coupon: tuple[int, datetime, uuid.UUID] | None = None
    for c in coupons:
        if c.expires_at <= now:
            continue
        off = c.discount(left)
        if off == 0:
            continue
        rank = (-off, c.expires_at, c.asset_id)
        if best_coupon is None or rank < best_coupon:
            best_coupon = rank
            coupon = Application(c.asset_id, off)
    left -= coupon.amount_fen if coupon else 0

    spent: list[Application] = []
    for packet in sorted(red_packets, key=lambda p: (p.expires_at, p.asset_id)):
        if left == 0:
            break
        if packet.expires_at <= now or packet.remaining_fen <= 0:
            continue
        take = min(left, packet.remaining_fen)
        spent.append(Application(packet.asset_id, take))
        left -= take
    return Plan(fee_fen=fee_fen, card=card, coupon=coupon, red_packets=tuple(spent))


def charge_legs(user_id: uuid.UUID, covered: Plan) -> list[tuple[AccountRef, int]]:
    """The ledger legs of a charge: revenue gets the whole fee; the balance pays the cash part,
    the red packet account what red packets cover, and promotions (an expense) the card's and the
    coupon's discount."""
    legs: list[tuple[AccountRef, int]] = []
    if covered.cash_fen:
        legs.append((user_balance(user_id), -covered.cash_fen))
    if covered.red_packet_fen:
        legs.append((user_red_packet(user_id), -covered.red_packet_fen))
    if covered.card_fen + covered.coupon_fen:
        legs.append((PLATFORM_PROMOTIONS, -(covered.card_fen + covered.coupon_fen)))
    legs.append((PLATFORM_REVENUE, covered.fee_fen))
    return legs
