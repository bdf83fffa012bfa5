import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class WalletOut(BaseModel):
    user_id: uuid.UUID
    balance_fen: int
    currency: Literal["CNY"] = "CNY"


class EntryOut(BaseModel):
    entry_id: int
    kind: str
    amount_fen: int
    balance_after_fen: int
    reference: str
    created_at: datetime


class EntriesOut(BaseModel):
    items: list[EntryOut]
    # Pass as `before` to get the next (older) page; null on the last page.
    next_before: int | None
