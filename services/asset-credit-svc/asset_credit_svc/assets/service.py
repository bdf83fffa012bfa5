"""Virtual assets (issue #5): templates administrators define, coupons, red packets and cards
issued to users (or cards bought with the balance), applied when a rental is charged by the rules
of `assets.rules`, expired by a sweep (and never applied once expired), revoked while unused.

Money-like assets are in the ledger: a red packet is a `user_red_packet` account funded from
`platform_promotions` when issued; its remainder goes back there when it expires or is revoked.
Coupons and cards move no money until applied; then the discount is booked as promotions expense
in the charge's transaction (`rules.charge_legs`). Every change is a row of `asset_history`.

Lock order, everywhere: asset rows (in id order), then ledger accounts. Never commits."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.assets import repository as repo
from asset_credit_svc.assets import rules
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.ledger.math import InsufficientFunds
from asset_credit_svc.models import AssetKind, AssetStatus, AssetTemplate, TransactionKind, UserAsset
from asset_credit_svc.payments.service import IdempotencyKeyReused
from contracts.events import CouponChanged, CouponStatus
from kit.errors import BusinessError, Conflict, NotFound
from kit.outbox import add_event

log = logging.getLogger(__name__)

PRODUCER = "asset-credit-svc"  # the outbox's producer name for the coupon events written here

MAX_VALID_DAYS = 3660


class TemplateNotFound(NotFound):
    code = "asset_template_not_found"
    title = "No such asset template"


class AssetNotFound(NotFound):
    code = "asset_not_found"
    title = "No such asset"


class InvalidAssetTemplate(BusinessError):
    status = 422
    code = "invalid_asset_template"
    title = "The asset template is not valid"


class PercentOutOfRange(BusinessError):
    status = 422
    code = "percent_out_of_range"
    title = "A percentage off must be between 1 and 100"


class TemplateExpired(Conflict):
    code = "template_expired"
    title = "This template's validity has ended; nothing more can be issued from it"


class TemplateInactive(Conflict):
    code = "template_inactive"
    title = "This template was deactivated"


class AssetNotRevocable(Conflict):
    code = "asset_in_use"
    title = "Only an available, unused asset can be revoked"


class CardNotForSale(Conflict):
    code = "card_not_for_sale"
    title = "This is not a card users can buy"


class InsufficientBalance(BusinessError):
    status = 402
    code = "insufficient_balance"
    title = "The balance does not cover the price"


@dataclass(frozen=True)
class TemplateSpec:
    kind: str
    name: str
    amount_off_fen: int | None = None
    percent_off: int | None = None
    max_discount_fen: int | None = None
    min_spend_fen: int = 0
    amount_fen: int | None = None
    card_minutes: int | None = None
    price_fen: int | None = None
    valid_days: int | None = None
    valid_until: datetime | None = None


def _positive(value: int | None, name: str) -> None:
    if value is not None and value <= 0:
        raise InvalidAssetTemplate(f"{name} must be positive", field=name)


def validate_spec(spec: TemplateSpec, now: datetime) -> None:
    """Refuse a template whose rules make no sense, each with its reason."""
    for name in ("amount_off_fen", "max_discount_fen", "amount_fen", "card_minutes", "price_fen", "valid_days"):
        _positive(getattr(spec, name), name)
    if spec.min_spend_fen < 0:
        raise InvalidAssetTemplate("min_spend_fen cannot be negative", field="min_spend_fen")
    if spec.valid_days is None and spec.valid_until is None:
        raise InvalidAssetTemplate("Give valid_days (from issuance), valid_until, or both", field="valid_days")
    if spec.valid_days is not None and spec.valid_days > MAX_VALID_DAYS:
        raise InvalidAssetTemplate(f"valid_days is at most {MAX_VALID_DAYS}", field="valid_days")
    if spec.valid_until is not None and spec.valid_until <= now:
        raise TemplateExpired("valid_until is in the past")
    given = {
        name
        for name in ("amount_off_fen", "percent_off", "max_discount_fen", "amount_fen", "card_minutes", "price_fen")
        if getattr(spec, name) is not None
    }
    allowed = {
        AssetKind.COUPON.value: {"amount_off_fen", "percent_off", "max_discount_fen"},
        AssetKind.RED_PACKET.value: {"amount_fen"},
        AssetKind.CARD.value: {"card_minutes", "price_fen"},
    }[spec.kind]
    if extra := sorted(given - allowed):
        raise InvalidAssetTemplate(f"A {spec.kind} has no {', '.join(extra)}", fields=extra)
    if spec.kind != AssetKind.COUPON.value and spec.min_spend_fen:
        raise InvalidAssetTemplate("Only coupons have a minimum spend", field="min_spend_fen")
    if spec.kind == AssetKind.COUPON.value:
        if (spec.amount_off_fen is None) == (spec.percent_off is None):
            raise InvalidAssetTemplate("A coupon has exactly one of amount_off_fen or percent_off")
        if spec.percent_off is not None and not 1 <= spec.percent_off <= 100:
            raise PercentOutOfRange(percent_off=spec.percent_off)
        if spec.max_discount_fen is not None and spec.percent_off is None:
            raise InvalidAssetTemplate("max_discount_fen applies to a percentage off", field="max_discount_fen")
    elif spec.kind == AssetKind.RED_PACKET.value and spec.amount_fen is None:
        raise InvalidAssetTemplate("A red packet needs amount_fen", field="amount_fen")
    elif spec.kind == AssetKind.CARD.value and spec.card_minutes is None:
        raise InvalidAssetTemplate("A card needs card_minutes", field="card_minutes")


async def create_template(session: AsyncSession, actor: str, spec: TemplateSpec, now: datetime) -> AssetTemplate:
    validate_spec(spec, now)
    template = AssetTemplate(
        id=uuid.uuid4(),
        kind=spec.kind,
        name=spec.name,
        amount_off_fen=spec.amount_off_fen,
        percent_off=spec.percent_off,
        max_discount_fen=spec.max_discount_fen,
        min_spend_fen=spec.min_spend_fen,
        amount_fen=spec.amount_fen,
        card_minutes=spec.card_minutes,
        price_fen=spec.price_fen,
        valid_days=spec.valid_days,
        valid_until=spec.valid_until,
        active=True,
        created_by=actor,
        created_at=now,
    )
    await repo.add_template(session, template)
    log.info("asset template created", extra={"template_id": str(template.id), "kind": spec.kind, "actor": actor})
    return template


async def deactivate_template(session: AsyncSession, template_id: uuid.UUID) -> AssetTemplate:
    template = await repo.template(session, template_id, for_update=True)
    if template is None:
        raise TemplateNotFound()
    template.active = False
    await session.flush()
    return template


def _issuable(template: AssetTemplate | None, now: datetime) -> AssetTemplate:
    if template is None:
        raise TemplateNotFound()
    if not template.active:
        raise TemplateInactive()
    if template.valid_until is not None and template.valid_until <= now:
        raise TemplateExpired()
    return template


def expiry_of(template: AssetTemplate, issued_at: datetime) -> datetime:
    ends = [issued_at + timedelta(days=template.valid_days)] if template.valid_days else []
    if template.valid_until is not None:
        ends.append(template.valid_until)
    return min(ends)


async def _grant(
    session: AsyncSession,
    template: AssetTemplate,
    user_id: uuid.UUID,
    issue_key: str,
    *,
    source: str,
    actor: str,
    now: datetime,
) -> tuple[UserAsset, bool]:
    inserted = await repo.insert_asset(
        session,
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "template_id": template.id,
            "kind": template.kind,
            "status": AssetStatus.AVAILABLE.value,
            "issue_key": issue_key,
            "source": source,
            "issued_by": actor,
            "issued_at": now,
            "expires_at": expiry_of(template, now),
            "remaining_fen": template.amount_fen if template.kind == AssetKind.RED_PACKET.value else None,
            "minutes_remaining": template.card_minutes if template.kind == AssetKind.CARD.value else None,
            "updated_at": now,
        },
    )
    asset = await repo.asset_by_key(session, template.id, user_id, issue_key)
    assert asset is not None
    if inserted is None:
        return asset, False
    if template.kind == AssetKind.RED_PACKET.value:
        assert template.amount_fen is not None
        await ledger.post(
            session,
            kind=TransactionKind.RED_PACKET_GRANT.value,
            reference=f"red_packet:{asset.id}",
            legs=[
                (ledger.PLATFORM_PROMOTIONS, -template.amount_fen),
                (ledger.user_red_packet(user_id), template.amount_fen),
            ],
        )
    await repo.record(
        session,
        asset,
        "issued",
        amount_fen=template.amount_fen or template.price_fen or 0,
        minutes=template.card_minutes or 0,
        actor=actor,
    )
    await _coupon_changed(session, asset, AssetStatus.AVAILABLE, now)
    return asset, True


async def issue(
    session: AsyncSession,
    *,
    actor: str,
    template_id: uuid.UUID,
    user_ids: list[uuid.UUID],
    key: str,
    now: datetime,
) -> list[tuple[UserAsset, bool]]:
    """Issue one asset of the template to each user; the same key again issues nothing more."""
    template = _issuable(await repo.template(session, template_id), now)
    issued = [
        await _grant(session, template, user_id, key, source="admin", actor=actor, now=now)
        for user_id in dict.fromkeys(user_ids)
    ]
    log.info(
        "assets issued",
        extra={"template_id": str(template_id), "users": len(issued), "new": sum(1 for _, new in issued if new)},
    )
    return issued


async def buy_card(
    session: AsyncSession, *, user_id: uuid.UUID, template_id: uuid.UUID, key: str, now: datetime
) -> tuple[UserAsset, bool]:
    """A card bought with the balance (balance -> revenue), idempotent on (user, key)."""
    issue_key = f"buy:{key}"
    earlier = await repo.asset_by_user_key(session, user_id, issue_key)
    if earlier is not None:
        if earlier.template_id != template_id:
            raise IdempotencyKeyReused("This Idempotency-Key was used to buy another card")
        return earlier, False
    template = await repo.template(session, template_id)
    if template is None or template.kind != AssetKind.CARD.value or template.price_fen is None:
        raise CardNotForSale()
    template = _issuable(template, now)
    assert template.price_fen is not None
    asset, new = await _grant(session, template, user_id, issue_key, source="purchase", actor=str(user_id), now=now)
    if not new:
        return asset, False
    try:
        await ledger.post(
            session,
            kind=TransactionKind.CARD_PURCHASE.value,
            reference=f"card_purchase:{asset.id}",
            legs=[(ledger.user_balance(user_id), -template.price_fen), (ledger.PLATFORM_REVENUE, template.price_fen)],
        )
    except InsufficientFunds as short:
        raise InsufficientBalance(balance_fen=short.balance_fen, price_fen=template.price_fen) from None
    return asset, True


async def _return_red_packet(session: AsyncSession, asset: UserAsset, reason: str) -> int:
    remaining = asset.remaining_fen or 0
    if remaining > 0:
        await ledger.post(
            session,
            kind=TransactionKind.RED_PACKET_RETURN.value,
            reference=f"red_packet_return:{asset.id}",
            legs=[(ledger.user_red_packet(asset.user_id), -remaining), (ledger.PLATFORM_PROMOTIONS, remaining)],
        )
    log.info("red packet returned to promotions", extra={"asset_id": str(asset.id), "fen": remaining, "why": reason})
    return remaining


async def revoke(session: AsyncSession, *, actor: str, asset_id: uuid.UUID, now: datetime) -> UserAsset:
    asset = await repo.asset(session, asset_id, for_update=True)
    if asset is None:
        raise AssetNotFound()
    template = await repo.template(session, asset.template_id)
    assert template is not None
    unused = (
        asset.kind == AssetKind.COUPON.value
        or (asset.kind == AssetKind.RED_PACKET.value and asset.remaining_fen == template.amount_fen)
        or (asset.kind == AssetKind.CARD.value and asset.minutes_remaining == template.card_minutes)
    )
    if asset.status != AssetStatus.AVAILABLE.value or not unused:
        raise AssetNotRevocable(asset_status=asset.status)
    await _close(session, asset, AssetStatus.REVOKED, now, actor=actor)
    refreshed = await repo.asset(session, asset.id)
    assert refreshed is not None
    return refreshed


async def expire_due(session: AsyncSession, now: datetime, *, limit: int = 200) -> int:
    """Mark assets whose validity ended as expired; a red packet's remainder goes back to
    promotions. (Planning never applies an expired asset, whether or not this ran yet.)"""
    due = await repo.due_to_expire(session, now, limit)
    for asset in due:
        await _close(session, asset, AssetStatus.EXPIRED, now)
    return len(due)


async def _close(
    session: AsyncSession, asset: UserAsset, status: AssetStatus, now: datetime, *, actor: str | None = None
) -> None:
    """End an asset (revoked or expired): a red packet's remainder goes back to promotions in a
    balanced transaction; the history records what was left."""
    event = status.value  # "revoked" / "expired"
    returned = 0
    if asset.kind == AssetKind.RED_PACKET.value:
        returned = await _return_red_packet(session, asset, event)
    await repo.set_asset(
        session,
        asset.id,
        now,
        status=status.value,
        **({"remaining_fen": 0} if asset.kind == AssetKind.RED_PACKET.value else {}),
    )
    await repo.record(session, asset, event, amount_fen=returned, minutes=asset.minutes_remaining or 0, actor=actor)
    await _coupon_changed(session, asset, status, now)


async def _coupon_changed(session: AsyncSession, asset: UserAsset, status: AssetStatus, now: datetime) -> None:
    """Tell the campaign audience (notify-svc) a user has, or no longer has, this unused coupon."""
    if asset.kind != AssetKind.COUPON.value:
        return
    event = CouponChanged(
        user_id=asset.user_id,
        asset_id=asset.id,
        status=CouponStatus(status.value),
        expires_at=asset.expires_at,
        at=now,
    )
    await add_event(session, event, key=str(asset.user_id), producer=PRODUCER)


# ---- at settlement --------------------------------------------------------------------------


async def lock_spendable(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    await repo.lock_spendable(session, user_id, now)


async def plan_for_charge(
    session: AsyncSession, user_id: uuid.UUID, fee_fen: int, duration_seconds: int | None, now: datetime
) -> rules.Plan:
    """Lock the user's spendable assets and work out what they cover (nothing is changed yet)."""
    if fee_fen <= 0:
        return rules.Plan(fee_fen=max(0, fee_fen))
    cards: list[rules.CardOffer] = []
    coupons: list[rules.CouponOffer] = []
    packets: list[rules.RedPacketOffer] = []
    for asset, template in await repo.lock_spendable(session, user_id, now):
        if asset.kind == AssetKind.CARD.value:
            cards.append(rules.CardOffer(asset.id, asset.expires_at, asset.minutes_remaining or 0))
        elif asset.kind == AssetKind.COUPON.value:
            coupons.append(
                rules.CouponOffer(
                    asset.id,
                    asset.expires_at,
                    min_spend_fen=template.min_spend_fen,
                    amount_off_fen=template.amount_off_fen,
                    percent_off=template.percent_off,
                    max_discount_fen=template.max_discount_fen,
                )
            )
        else:
            packets.append(rules.RedPacketOffer(asset.id, asset.expires_at, asset.remaining_fen or 0))
    return rules.plan(fee_fen, duration_seconds, now, cards=cards, coupons=coupons, red_packets=packets)


async def apply_plan(
    session: AsyncSession,
    covered: rules.Plan,
    *,
    rental_id: uuid.UUID,
    charge_id: uuid.UUID,
    now: datetime,
) -> None:
    """Spend what `plan_for_charge` chose (the rows are still locked by this transaction)."""
    applications = [a for a in (covered.card, covered.coupon) if a is not None] + list(covered.red_packets)
    for application in applications:
        asset = await repo.asset(session, application.asset_id)
        assert asset is not None
        values: dict[str, object] = {}
        if asset.kind == AssetKind.CARD.value:
            left = (asset.minutes_remaining or 0) - application.minutes
            values = {"minutes_remaining": left, "status": AssetStatus.USED.value if left == 0 else asset.status}
        elif asset.kind == AssetKind.COUPON.value:
            values = {"status": AssetStatus.USED.value, "used_rental_id": rental_id}
        else:
            left = (asset.remaining_fen or 0) - application.amount_fen
            values = {"remaining_fen": left, "status": AssetStatus.USED.value if left == 0 else asset.status}
        await repo.set_asset(session, asset.id, now, **values)
        await repo.record(
            session,
            asset,
            "applied",
            amount_fen=application.amount_fen,
            minutes=application.minutes,
            rental_id=rental_id,
            charge_id=charge_id,
        )
        await _coupon_changed(session, asset, AssetStatus.USED, now)


# ---- reads ----------------------------------------------------------------------------------


def effective_status(asset: UserAsset, now: datetime) -> str:
    """An available asset past its expiry is expired even before the sweep marks it."""
    if asset.status == AssetStatus.AVAILABLE.value and asset.expires_at <= now:
        return AssetStatus.EXPIRED.value
    return asset.status
