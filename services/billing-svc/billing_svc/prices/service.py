"""Which price applies to a scanned code, and the admin's plans. Never commits.

Resolution for a code (a cabinet's or a bank's id): the active `cabinet` plan for exactly that id;
else the active `region` plan whose value is the longest prefix of it; else the active `default`
plan; else the service's settings (150 fen per started 30 minutes, capped at 2000 a day, sold at 9900)."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing_svc.models import PricingPlan
from billing_svc.pricing import Price
from billing_svc.settings import Settings
from kit.errors import Conflict, NotFound


class PlanNotFound(NotFound):
    code = "plan_not_found"
    title = "No such pricing plan"


class PlanExists(Conflict):
    code = "plan_exists"
    title = "An active plan already exists for this scope and value"


def default_price(settings: Settings) -> Price:
    return Price(
        period_minutes=settings.period_minutes,
        price_per_period_fen=settings.price_per_period_fen,
        free_minutes=settings.free_minutes,
        daily_cap_fen=settings.daily_cap_fen,
        purchase_ceiling_fen=settings.purchase_ceiling_fen,
    )


def plan_price(plan: PricingPlan) -> Price:
    return Price(
        period_minutes=plan.period_minutes,
        price_per_period_fen=plan.price_per_period_fen,
        free_minutes=plan.free_minutes,
        daily_cap_fen=plan.daily_cap_fen,
        purchase_ceiling_fen=plan.purchase_ceiling_fen,
    )


async def plan_for_code(session: AsyncSession, code: str) -> PricingPlan | None:
    """One statement (a borrow runs it; three lookups in turn cost two more round trips, issue 9): the active
    plans that could apply, the cabinet's first, then the longest matching region prefix, then the default."""
    rank = case((PricingPlan.scope == "cabinet", 0), (PricingPlan.scope == "region", 1), else_=2)
    stmt = (
        select(PricingPlan)
        .where(
            PricingPlan.active,
            or_(
                and_(PricingPlan.scope == "cabinet", PricingPlan.scope_value == code),
                and_(
                    PricingPlan.scope == "region",
                    literal(code).startswith(PricingPlan.scope_value, autoescape=False),
                ),
                PricingPlan.scope == "default",
            ),
        )
        .order_by(rank, func.length(PricingPlan.scope_value).desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def price_for_code(
    session: AsyncSession, settings: Settings, code: str | None
) -> tuple[Price, PricingPlan | None]:
    plan = await plan_for_code(session, code) if code else None
    if plan is None and not code:
        plan = (
            await session.execute(select(PricingPlan).where(PricingPlan.active, PricingPlan.scope == "default"))
        ).scalar_one_or_none()
    return (plan_price(plan), plan) if plan is not None else (default_price(settings), None)


async def list_plans(session: AsyncSession, include_inactive: bool) -> list[PricingPlan]:
    stmt = select(PricingPlan).order_by(PricingPlan.scope, PricingPlan.scope_value, PricingPlan.created_at)
    if not include_inactive:
        stmt = stmt.where(PricingPlan.active)
    return list((await session.execute(stmt)).scalars())


async def create_plan(session: AsyncSession, actor: str, values: dict[str, object]) -> PricingPlan:
    plan = PricingPlan(id=uuid.uuid4(), updated_by=actor, **values)
    try:
        async with session.begin_nested():
            session.add(plan)
            await session.flush()
    except IntegrityError:
        raise PlanExists() from None
    return plan


async def get_plan(session: AsyncSession, plan_id: uuid.UUID, *, for_update: bool = False) -> PricingPlan | None:
    stmt = select(PricingPlan).where(PricingPlan.id == plan_id)
    return (await session.execute(stmt.with_for_update() if for_update else stmt)).scalar_one_or_none()


async def update_plan(session: AsyncSession, actor: str, plan_id: uuid.UUID, values: dict[str, object]) -> PricingPlan:
    plan = (
        await session.execute(select(PricingPlan).where(PricingPlan.id == plan_id).with_for_update())
    ).scalar_one_or_none()
    if plan is None:
        raise PlanNotFound()
    try:
        async with session.begin_nested():
            for name, value in values.items():
                setattr(plan, name, value)
            plan.updated_by = actor
            plan.updated_at = datetime.now(UTC)
            await session.flush()
    except IntegrityError:
        raise PlanExists() from None
    return plan
