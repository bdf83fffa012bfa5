import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from notify_svc.models import Category


class ImageLink(BaseModel):
    url: str = Field(description="Signed; expires (fetch the message again for a fresh one)")
    content_type: str


class MessageOut(BaseModel):
    message_id: uuid.UUID
    category: Category
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None
    images: list[ImageLink] = Field(default_factory=list)


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_before: str | None


class UnreadCount(BaseModel):
    unread: int
    by_category: dict[Category, int]


class MarkedRead(BaseModel):
    marked: int
