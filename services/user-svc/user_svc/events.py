from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import EventData


class EventPublisher(Protocol):
    """What services need to emit an event; `kit.app.Runtime` is one (it writes the outbox)."""

    async def publish(self, session: AsyncSession, data: EventData, *, key: str) -> Envelope: ...
