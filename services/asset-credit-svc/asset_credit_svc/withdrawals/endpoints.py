"""POST /v1/wallet/withdrawals: the balance back to where it came from."""

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from asset_credit_svc.withdrawals import service
from kit.app import RuntimeDep
from kit.auth import CurrentUser
from kit.db import SessionDep
from kit.idempotency import IdempotencyKey

router = APIRouter(prefix="/v1/wallet/withdrawals", tags=["wallet"])


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_fen: int = Field(ge=1, le=100_000_000, strict=True)


class WithdrawalPartOut(BaseModel):
    top_up_id: uuid.UUID
    channel: str
    amount_fen: int
    status: str


class WithdrawalOut(BaseModel):
    withdrawal_id: uuid.UUID
    amount_fen: int
    created_at: datetime
    parts: list[WithdrawalPartOut]


@router.post("", status_code=status.HTTP_201_CREATED)
async def withdraw(
    body: WithdrawalIn,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    key: IdempotencyKey,
) -> WithdrawalOut:
    withdrawal, parts, created = await service.withdraw(
        session, runtime, user_id=user.user_id, key=key, amount_fen=body.amount_fen
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return WithdrawalOut(
        withdrawal_id=withdrawal.id,
        amount_fen=withdrawal.amount_fen,
        created_at=withdrawal.created_at,
        parts=[
            WithdrawalPartOut(top_up_id=p.top_up_id, channel=p.channel, amount_fen=p.amount_fen, status=p.status)
            for p in parts
        ],
    )
