import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from asset_credit_svc.models import TopUpStatus

Channel = Literal["alipay", "wechat"]


class TopUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_fen: int = Field(ge=1, le=1_000_000, strict=True)
    channel: Channel


class TopUpOut(BaseModel):
    top_up_id: uuid.UUID
    status: TopUpStatus
    amount_fen: int
    channel: str
    created_at: datetime
    completed_at: datetime | None = None
    failure_reason: str | None = None


class NotifyAck(BaseModel):
    code: Literal["SUCCESS"] = "SUCCESS"
    message: str = "OK"
