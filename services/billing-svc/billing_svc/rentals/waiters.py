"""In-process wake-ups: a borrow request waits for its rental to leave `unlocking`; the consumer
that applied the device's outcome notifies after its commit. Waiting also re-reads the database
(another instance's consumer may have applied the outcome), so a missed wake-up costs one poll."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID


class RentalWaiters:
    def __init__(self) -> None:
        self._events: dict[UUID, set[asyncio.Event]] = {}

    @contextmanager
    def watch(self, rental_id: UUID) -> Iterator[asyncio.Event]:
        """Register before the rental is committed, so a wake-up cannot be lost."""
        event = asyncio.Event()
        self._events.setdefault(rental_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(rental_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[rental_id]

    def notify(self, rental_id: UUID) -> None:
        for event in self._events.get(rental_id, ()):
            event.set()

    def __len__(self) -> int:
        return len(self._events)
