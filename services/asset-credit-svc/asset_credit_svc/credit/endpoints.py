"""GET /v1/credit (own score, level, what it allows), its history; admin adjustments, audited."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from asset_credit_svc.credit import service
from asset_credit_svc.deposit.service import held_fen
from asset_credit_svc.models import CreditChange
from asset_credit_svc.settings import Settings
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import CurrentUser, Principal, require_permission, user_scope
from kit.db import SessionDep
from kit.errors import BusinessError
from kit.idempotency import idempotency_key

router = APIRouter(tags=["credit"])

CreditAdmin = Annotated[Principal, Depends(require_permission("credit:adjust"))]


class CreditOut(BaseModel):
    score: int
    level: str
    deposit_required: bool
    borrow_refusal: str | None = Field(description="Why borrowing is refused now (code), or null")
    detail: str | None


class CreditChangeOut(BaseModel):
    delta: int
    score_after: int
    reason: str
    source: str
    source_id: str
    actor: str | None
    note: str | None
    created_at: datetime


class CreditHistory(BaseModel):
    items: list[CreditChangeOut]


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(ge=-1000, le=1000, strict=True)
    note: str = Field(min_length=1, max_length=2000)


class AdjustmentReplayMismatch(BusinessError):
    status = 409
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for another adjustment"


def settings_of(runtime: RuntimeDep) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


def change_out(c: CreditChange) -> CreditChangeOut:
    return CreditChangeOut(
        delta=c.delta,
        score_after=c.score_after,
        reason=c.reason,
        source=c.source,
        source_id=c.source_id,
        actor=c.actor,
        note=c.note,
        created_at=c.created_at,
    )


@router.get("/v1/credit", dependencies=[user_scope("wallet")])
async def my_credit(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> CreditOut:
    s = await service.standing(session, settings_of(runtime), user.user_id, await held_fen(session, user.user_id))
    return CreditOut(
        score=s.score,
        level=s.level,
        deposit_required=s.deposit_required,
        borrow_refusal=s.refusal_code,
        detail=s.refusal_detail,
    )


@router.get("/v1/credit/history", dependencies=[user_scope("wallet")])
async def my_credit_history(
    user: CurrentUser, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> CreditHistory:
    return CreditHistory(items=[change_out(c) for c in await service.history(session, user.user_id, limit)])


@router.post(
    "/v1/admin/credit/{user_id}/adjustments",
    status_code=status.HTTP_201_CREATED,
    dependencies=[audited("credit.adjust", "user", "user_id")],
)
async def adjust(
    user_id: uuid.UUID,
    body: AdjustmentIn,
    actor: CreditAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    key: Annotated[str, Depends(idempotency_key(150))],
    audit: CurrentAudit,
) -> CreditChangeOut:
    record = await service.change(
        session,
        settings_of(runtime),
        user_id,
        body.delta,
        reason="admin_adjustment",
        source="admin",
        source_id=f"{actor.subject}:{key}",
        actor=actor.subject,
        note=body.note,
    )
    if record is None:
        response.status_code = status.HTTP_200_OK
        earlier = await service.by_source(session, f"{actor.subject}:{key}", "admin_adjustment")
        if earlier is None or earlier.note != body.note or earlier.user_id != user_id or earlier.delta != body.delta:
            raise AdjustmentReplayMismatch()
        audit.note(replay_of=str(earlier.id))  # the same request again: nothing changed
        return change_out(earlier)
    audit.note(before={"score": record.score_after - record.delta}, after={"score": record.score_after})
    return change_out(record)


@router.get("/v1/admin/credit/{user_id}")
async def user_credit(
    user_id: uuid.UUID, _: CreditAdmin, session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 200
) -> CreditHistory:
    return CreditHistory(items=[change_out(c) for c in await service.history(session, user_id, limit)])
