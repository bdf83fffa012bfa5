import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from contracts.events import NoticeKind


class NoticeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: NoticeKind
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]


class ImageOut(BaseModel):
    image_id: uuid.UUID
    content_type: str
    url: str
    size: int | None = None


class NoticeOut(BaseModel):
    notice_id: uuid.UUID
    kind: NoticeKind
    title: str
    text: str
    created_by: str
    created_at: datetime
    published_at: datetime | None
    images: list[ImageOut]


class NoticeList(BaseModel):
    items: list[NoticeOut]
