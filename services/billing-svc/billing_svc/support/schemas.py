from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from kit.inputs import UtcDatetime


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="What is wrong with the rental")


class DisputeOut(BaseModel):
    dispute_id: UUID
    rental_id: UUID
    user_id: UUID
    reason: str
    state: str
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


class DisputeList(BaseModel):
    items: list[DisputeOut]


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


class CorrectionIn(BaseModel):
    """Either end an active rental at `ended_at`, or lower a finished rental's fee (`fee_fen`, or
    recomputed from an earlier `ended_at`). Fees are never raised here."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000, description="Why; kept in the audit")
    fee_fen: int | None = Field(default=None, ge=0, strict=True)
    ended_at: UtcDatetime | None = None
    dispute_id: UUID | None = Field(default=None, description="The dispute this correction resolves")


class CorrectionOut(BaseModel):
    correction_id: UUID
    rental_id: UUID
    dispute_id: UUID | None
    actor: str
    action: str
    note: str
    before: dict[str, object]
    after: dict[str, object]
    refund_fen: int
    refund_id: UUID | None
    created_at: datetime


class CorrectionList(BaseModel):
    items: list[CorrectionOut]
