"""The price shown before borrowing (GET /v1/pricing?code=...) and the admin's pricing plans."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from billing_svc.models import PricingPlan
from billing_svc.prices import service
from billing_svc.prices.schemas import PlanIn, PlanList, PlanOut, PlanPatch, PriceOut
from billing_svc.rentals.service import settings_of
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import SessionDep

router = APIRouter(tags=["pricing"])

Pricing = Annotated[Principal, Depends(require_permission("pricing:manage"))]

RULE = (
    "Free up to free_minutes; otherwise every started period from the start costs price_per_period_fen, "
    "and each 24 h window from the start costs at most daily_cap_fen. With a purchase ceiling, a bank "
    "not returned by the time its fee reaches the ceiling is sold to the user for exactly that amount."
)


def plan_out(plan: PricingPlan) -> PlanOut:
    return PlanOut(
        plan_id=plan.id,
        name=plan.name,
        scope=plan.scope,
        scope_value=plan.scope_value,
        period_minutes=plan.period_minutes,
        price_per_period_fen=plan.price_per_period_fen,
        free_minutes=plan.free_minutes,
        daily_cap_fen=plan.daily_cap_fen,
        purchase_ceiling_fen=plan.purchase_ceiling_fen,
        active=plan.active,
        updated_by=plan.updated_by,
        updated_at=plan.updated_at,
    )


@router.get("/v1/pricing")
async def get_pricing(
    runtime: RuntimeDep,
    session: SessionDep,
    code: Annotated[str | None, Query(min_length=1, max_length=128, description="The code you will scan")] = None,
) -> PriceOut:
    price, plan = await service.price_for_code(session, settings_of(runtime), code)
    return PriceOut(
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
        purchase_ceiling_fen=price.purchase_ceiling_fen,
        plan_id=plan.id if plan else None,
        plan_name=plan.name if plan else None,
        rule=RULE,
    )


@router.get("/v1/admin/pricing-plans")
async def list_plans(_: Pricing, session: SessionDep, include_inactive: bool = False) -> PlanList:
    return PlanList(items=[plan_out(p) for p in await service.list_plans(session, include_inactive)])


@router.post("/v1/admin/pricing-plans", status_code=201, dependencies=[audited("pricing_plan.create", "pricing_plan")])
async def create_plan(body: PlanIn, actor: Pricing, session: SessionDep, audit: CurrentAudit) -> PlanOut:
    out = plan_out(await service.create_plan(session, actor.subject, body.model_dump()))
    audit.note(target_id=out.plan_id, after=out.model_dump(mode="json"))
    return out


@router.patch(
    "/v1/admin/pricing-plans/{plan_id}", dependencies=[audited("pricing_plan.update", "pricing_plan", "plan_id")]
)
async def update_plan(
    plan_id: UUID, body: PlanPatch, actor: Pricing, session: SessionDep, audit: CurrentAudit
) -> PlanOut:
    """Applies to rentals borrowed from now on; `active: false` retires the plan."""
    values = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    current = await service.get_plan(session, plan_id, for_update=True)
    before = plan_out(current).model_dump(mode="json") if current is not None else {}
    out = plan_out(await service.update_plan(session, actor.subject, plan_id, values))
    audit.changed(before, out.model_dump(mode="json"))
    return out
