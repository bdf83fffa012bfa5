"""Finance's side of value-added service fees: a user's charges, and refunding a settled one once."""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from asset_credit_svc.models import VasCharge
from asset_credit_svc.vas import service
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep

router = APIRouter(prefix="/v1/admin", tags=["value-added service fees"])
Refunder = Annotated[Principal, Depends(require_permission("payments:refund"))]
Reader = Annotated[Principal, Depends(require_permission("ledger:read"))]
ConsentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class VasChargeOut(BaseModel):
    consent_id: int
    user_id: UUID
    service_code: str
    provider: str
    amount_fen: int
    status: str = Field(description="settled, failed (nothing debited) or refunded")
    failure_reason: str | None
    created_at: datetime
    refunded_at: datetime | None
    refund_reason: str | None


class VasChargeList(BaseModel):
    items: list[VasChargeOut]


def _out(c: VasCharge) -> VasChargeOut:
    return VasChargeOut.model_validate(c, from_attributes=True)


@router.get("/users/{user_id}/vas-charges")
async def charges_of(user_id: UUID, _: Reader, session: ReadSessionDep) -> VasChargeList:
    """A user's value-added service fees, newest first."""
    rows = await session.scalars(
        select(VasCharge).where(VasCharge.user_id == user_id).order_by(VasCharge.created_at.desc()).limit(200)
    )
    return VasChargeList(items=[_out(c) for c in rows])


@router.post(
    "/vas-charges/{consent_id}/refund",
    dependencies=[audited("vas_fee.refund", "vas_charge", "consent_id", state=row_state(VasCharge))],
)
async def refund(
    consent_id: ConsentId, body: RefundIn, who: Refunder, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> VasChargeOut:
    """Refund a settled fee to the user's balance, once (`409 vas_charge_not_refundable` for a failed or an
    already refunded one, `404 vas_charge_not_found`); asset.vas_fee.refunded tells notify-svc."""
    audit.note(reason=body.reason)
    charge = await service.refund(session, runtime, consent_id, body.reason, who.subject)
    audit.note(amount_fen=charge.amount_fen, user_id=str(charge.user_id))
    return _out(charge)
