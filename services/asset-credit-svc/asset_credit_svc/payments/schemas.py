import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from asset_credit_svc.models import TopUpStatus

Channel = Literal["alipay", "wechat", "bank_card"]


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


class TopUpPayOut(BaseModel):
    """What the user's app hands to the channel's SDK to pay the top-up (Alipay: `order_string`;
    WeChat Pay: the signed `appid`/`partnerid`/`prepayid`/... or JSAPI `package`/`paySign`)."""

    top_up_id: uuid.UUID
    channel: str
    pay_params: dict[str, str]
