"""Virtual assets over HTTP: a user's own coupons, red packets and cards with their history,
buying a card; administrators (permission `assets:manage`) define templates, issue, revoke, list."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from asset_credit_svc.assets import repository as repo
from asset_credit_svc.assets import service
from asset_credit_svc.assets.schemas import (
    AssetDetailOut,
    AssetOut,
    AssetsOut,
    BuyCardIn,
    HistoryOut,
    IssuedOut,
    IssueIn,
    MyAssetsOut,
    TemplateIn,
    TemplateOut,
    TemplatesOut,
)
from asset_credit_svc.ledger import service as ledger
from asset_credit_svc.models import AssetHistory, AssetTemplate, UserAsset
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import SessionDep
from kit.idempotency import idempotency_key

router = APIRouter(tags=["assets"])

AssetAdmin = Annotated[Principal, Depends(require_permission("assets:manage"))]
AssetKey = Annotated[str, Depends(idempotency_key(150))]  # issue keys are stored with a prefix
StatusFilter = Literal["available", "used", "expired", "revoked"]
KindFilter = Literal["coupon", "red_packet", "card"]


def _now() -> datetime:
    return datetime.now(UTC)


def template_out(t: AssetTemplate) -> TemplateOut:
    return TemplateOut(
        template_id=t.id,
        kind=t.kind,
        name=t.name,
        amount_off_fen=t.amount_off_fen,
        percent_off=t.percent_off,
        max_discount_fen=t.max_discount_fen,
        min_spend_fen=t.min_spend_fen,
        amount_fen=t.amount_fen,
        card_minutes=t.card_minutes,
        price_fen=t.price_fen,
        valid_days=t.valid_days,
        valid_until=t.valid_until,
        active=t.active,
        created_by=t.created_by,
        created_at=t.created_at,
    )


def asset_out(a: UserAsset, t: AssetTemplate, now: datetime) -> AssetOut:
    return AssetOut(
        asset_id=a.id,
        user_id=a.user_id,
        template_id=a.template_id,
        kind=a.kind,
        name=t.name,
        status=service.effective_status(a, now),
        issued_at=a.issued_at,
        expires_at=a.expires_at,
        source=a.source,
        amount_off_fen=t.amount_off_fen,
        percent_off=t.percent_off,
        max_discount_fen=t.max_discount_fen,
        min_spend_fen=t.min_spend_fen,
        used_rental_id=a.used_rental_id,
        amount_fen=t.amount_fen,
        remaining_fen=a.remaining_fen,
        card_minutes=t.card_minutes,
        minutes_remaining=a.minutes_remaining,
    )


def history_out(h: AssetHistory) -> HistoryOut:
    return HistoryOut(
        asset_id=h.asset_id,
        kind=h.kind,
        action=h.action,
        amount_fen=h.amount_fen,
        minutes=h.minutes,
        rental_id=h.rental_id,
        charge_id=h.charge_id,
        actor=h.actor,
        created_at=h.created_at,
    )


def _filtered(
    rows: list[tuple[UserAsset, AssetTemplate]], now: datetime, status_: StatusFilter | None
) -> list[AssetOut]:
    items = [asset_out(a, t, now) for a, t in rows]
    return [i for i in items if status_ is None or i.status == status_]


# ---- users ----------------------------------------------------------------------------------


@router.get("/v1/assets", response_model=MyAssetsOut, dependencies=[user_scope("wallet")])
async def my_assets(
    user: CurrentUser,
    session: SessionDep,
    kind: KindFilter | None = None,
    status_: Annotated[StatusFilter | None, Query(alias="status")] = None,
    history_limit: Annotated[int, Query(ge=0, le=200)] = 50,
) -> MyAssetsOut:
    now = _now()
    rows = await repo.assets(session, user_id=user.user_id, kind=kind, limit=500)
    return MyAssetsOut(
        items=_filtered(rows, now, status_),
        red_packet_balance_fen=await ledger.balance_of(session, ledger.user_red_packet(user.user_id)),
        history=[history_out(h) for h in await repo.history(session, user_id=user.user_id, limit=history_limit)]
        if history_limit
        else [],
    )


@router.get("/v1/assets/cards-for-sale", response_model=TemplatesOut, dependencies=[user_scope("wallet")])
async def cards_for_sale(_: CurrentUser, session: SessionDep) -> TemplatesOut:
    now = _now()
    cards = [t for t in await repo.cards_for_sale(session) if t.valid_until is None or t.valid_until > now]
    return TemplatesOut(items=[template_out(t) for t in cards])


@router.post("/v1/assets/cards", response_model=AssetOut, status_code=status.HTTP_201_CREATED)
async def buy_card(
    body: BuyCardIn,
    user: CurrentUser,
    session: SessionDep,
    response: Response,
    key: AssetKey,
) -> AssetOut:
    """Buy a card with the balance (402 insufficient_balance when it does not cover the price)."""
    now = _now()
    asset, new = await service.buy_card(session, user_id=user.user_id, template_id=body.template_id, key=key, now=now)
    if not new:
        response.status_code = status.HTTP_200_OK
    template = await repo.template(session, asset.template_id)
    assert template is not None
    return asset_out(asset, template, now)


@router.get("/v1/assets/{asset_id}", response_model=AssetDetailOut, dependencies=[user_scope("wallet")])
async def my_asset(asset_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> AssetDetailOut:
    asset = await repo.asset(session, asset_id)
    if asset is None or asset.user_id != user.user_id:
        raise service.AssetNotFound()
    template = await repo.template(session, asset.template_id)
    assert template is not None
    history = await repo.history(session, user_id=user.user_id, asset_id=asset.id)
    return AssetDetailOut(asset=asset_out(asset, template, _now()), history=[history_out(h) for h in history])


# ---- administrators -------------------------------------------------------------------------

TEMPLATE = row_state(AssetTemplate)


@router.post(
    "/v1/admin/asset-templates",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[audited("asset_template.create", "asset_template", state=TEMPLATE)],
)
async def create_template(body: TemplateIn, actor: AssetAdmin, session: SessionDep, audit: CurrentAudit) -> TemplateOut:
    spec = service.TemplateSpec(**body.model_dump())
    out = template_out(await service.create_template(session, actor.subject, spec, _now()))
    audit.note(target_id=out.template_id)
    return out


@router.get("/v1/admin/asset-templates", response_model=TemplatesOut)
async def list_templates(
    _: AssetAdmin,
    session: SessionDep,
    kind: KindFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TemplatesOut:
    return TemplatesOut(items=[template_out(t) for t in await repo.templates(session, kind=kind, limit=limit)])


@router.post(
    "/v1/admin/asset-templates/{template_id}/deactivate",
    response_model=TemplateOut,
    dependencies=[audited("asset_template.deactivate", "asset_template", "template_id", state=TEMPLATE)],
)
async def deactivate_template(template_id: uuid.UUID, _: AssetAdmin, session: SessionDep) -> TemplateOut:
    """Nothing more is issued or sold from it; what users hold stays valid."""
    return template_out(await service.deactivate_template(session, template_id))


@router.post(
    "/v1/admin/asset-templates/{template_id}/issues",
    response_model=IssuedOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[audited("asset_template.issue", "asset_template", "template_id")],
)
async def issue(
    template_id: uuid.UUID,
    body: IssueIn,
    actor: AssetAdmin,
    session: SessionDep,
    response: Response,
    key: AssetKey,
    audit: CurrentAudit,
) -> IssuedOut:
    """One asset per user id; the same Idempotency-Key again issues nothing more to those users."""
    now = _now()
    issued = await service.issue(
        session,
        actor=actor.subject,
        template_id=template_id,
        user_ids=body.user_ids,
        key=key,
        now=now,
    )
    template = await repo.template(session, template_id)
    assert template is not None
    new = sum(1 for _, is_new in issued if is_new)
    audit.created(template_id, {"assets": {str(a.user_id): str(a.id) for a, is_new in issued if is_new}})
    if new == 0:
        response.status_code = status.HTTP_200_OK
    return IssuedOut(items=[asset_out(a, template, now) for a, _ in issued], issued=new)


@router.get("/v1/admin/assets", response_model=AssetsOut)
async def list_assets(
    _: AssetAdmin,
    session: SessionDep,
    user_id: uuid.UUID | None = None,
    template_id: uuid.UUID | None = None,
    kind: KindFilter | None = None,
    status_: Annotated[StatusFilter | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AssetsOut:
    rows = await repo.assets(session, user_id=user_id, template_id=template_id, kind=kind, limit=limit)
    return AssetsOut(items=_filtered(rows, _now(), status_))


@router.get("/v1/admin/assets/{asset_id}", response_model=AssetDetailOut)
async def asset_detail(asset_id: uuid.UUID, _: AssetAdmin, session: SessionDep) -> AssetDetailOut:
    asset = await repo.asset(session, asset_id)
    if asset is None:
        raise service.AssetNotFound()
    template = await repo.template(session, asset.template_id)
    assert template is not None
    history = await repo.history(session, user_id=asset.user_id, asset_id=asset.id)
    return AssetDetailOut(asset=asset_out(asset, template, _now()), history=[history_out(h) for h in history])


@router.post(
    "/v1/admin/assets/{asset_id}/revoke",
    response_model=AssetOut,
    dependencies=[audited("asset.revoke", "asset", "asset_id", state=row_state(UserAsset))],
)
async def revoke(asset_id: uuid.UUID, actor: AssetAdmin, session: SessionDep) -> AssetOut:
    """Revoke an available, unused asset (a red packet's amount goes back to promotions)."""
    now = _now()
    asset = await service.revoke(session, actor=actor.subject, asset_id=asset_id, now=now)
    template = await repo.template(session, asset.template_id)
    assert template is not None
    return asset_out(asset, template, now)
