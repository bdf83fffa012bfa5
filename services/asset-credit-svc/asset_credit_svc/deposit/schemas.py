import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from asset_credit_svc.payments.schemas import Channel


class DepositPayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel


class DepositOperationOut(BaseModel):
    operation_id: uuid.UUID
    kind: str
    amount_fen: int
    channel: str
    status: str
    source: str
    failure_reason: str | None
    created_at: datetime
    completed_at: datetime | None


class DepositPayParamsOut(BaseModel):
    """What the app hands to the channel's SDK (or, for a bank card, posts as a form) to pay the deposit."""

    operation_id: uuid.UUID
    channel: str
    pay_params: dict[str, str]


class DepositOut(BaseModel):
    held_fen: int
    required_fen: int
    currency: Literal["CNY"] = "CNY"


class DepositHistory(BaseModel):
    items: list[DepositOperationOut]
