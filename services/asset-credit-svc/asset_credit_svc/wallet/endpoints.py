from typing import Annotated

from fastapi import APIRouter, Query

from asset_credit_svc.wallet import service
from asset_credit_svc.wallet.schemas import EntriesOut, EntryOut, WalletOut
from kit.auth import CurrentUser
from kit.db import SessionDep

router = APIRouter(prefix="/v1/wallet", tags=["wallet"])


@router.get("", response_model=WalletOut)
async def get_wallet(user: CurrentUser, session: SessionDep) -> WalletOut:
    return WalletOut(user_id=user.user_id, balance_fen=await service.balance(session, user.user_id))


@router.get("/entries", response_model=EntriesOut)
async def list_entries(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, description="entry_id cursor from `next_before`")] = None,
) -> EntriesOut:
    rows, next_before = await service.entries(session, user.user_id, limit=limit, before=before)
    return EntriesOut(
        items=[
            EntryOut(
                entry_id=r.entry_id,
                kind=r.kind,
                amount_fen=r.amount_fen,
                balance_after_fen=r.balance_after_fen,
                reference=r.reference,
                created_at=r.created_at,
            )
            for r in rows
        ],
        next_before=next_before,
    )
