import uuid
from datetime import datetime

from pydantic import BaseModel

from notify_svc.models import Category


class MessageOut(BaseModel):
    message_id: uuid.UUID
    category: Category
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_before: str | None


class UnreadCount(BaseModel):
    unread: int
    by_category: dict[Category, int]


class MarkedRead(BaseModel):
    marked: int
