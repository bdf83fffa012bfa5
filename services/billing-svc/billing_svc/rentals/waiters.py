"""Wake-ups of waiting borrows: a borrow request waits for its rental to leave `unlocking`. The consumer
that applied the device's outcome wakes this instance's waiters after its commit, and every instance's
through a PostgreSQL NOTIFY on `OUTCOME_CHANNEL` (payload: the rental id) sent by the same commit.
Waiting also re-reads the database now and then, so a missed wake-up (a listener reconnecting) costs
one poll, never a wrong answer."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

OUTCOME_CHANNEL = "billing_rental_outcome"


class RentalWaiters:
    def __init__(self) -> None:
        self._events: dict[UUID, set[asyncio.Event]] = {}
        self._since: dict[UUID, float] = {}  # when the rental's first watcher began to wait

    @contextmanager
    def watch(self, rental_id: UUID) -> Iterator[asyncio.Event]:
        """Register before the rental is committed, so a wake-up cannot be lost."""
        event = asyncio.Event()
        self._events.setdefault(rental_id, set()).add(event)
        self._since.setdefault(rental_id, time.monotonic())
        try:
            yield event
        finally:
            waiting = self._events.get(rental_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[rental_id]
                    self._since.pop(rental_id, None)

    def notify(self, rental_id: UUID) -> None:
        for event in self._events.get(rental_id, ()):
            event.set()

    def notify_payload(self, payload: str) -> None:
        """A NOTIFY from any instance's consumer; a payload that is not a rental id is ignored."""
        try:
            rental_id = UUID(payload)
        except ValueError:
            return
        self.notify(rental_id)

    def notify_all(self) -> None:
        """Every waiter re-reads (the listener reconnected: it may have missed notifications)."""
        for events in self._events.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        return len(self._events)

    def oldest_wait_s(self) -> float:
        """How long the longest-waiting borrow has waited for its outcome (0 when none waits)."""
        return time.monotonic() - min(self._since.values()) if self._since else 0.0
