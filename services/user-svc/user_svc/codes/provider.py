"""Where one-time codes are delivered. A real SMS gateway or mail relay implements `MessageProvider`;
the sandbox behaves like one (delivery can fail) and records what it "sent" in the development
outbox (`dev_messages`), which only non-production deployments expose, to administrators."""

import logging
import random
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work
from user_svc.models import DevMessage

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The provider did not accept the message."""


class MessageProvider(Protocol):
    async def send(self, *, channel: str, destination: str, body: str, code: str) -> None:
        """Deliver `body` (which contains `code`) to `destination`; raise DeliveryFailed if it was not."""
        ...


class SandboxProvider:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        fail_destinations: frozenset[str] = frozenset(),
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._fail = fail_destinations
        self._failure_rate = failure_rate
        self._rng = rng or random.SystemRandom()

    async def send(self, *, channel: str, destination: str, body: str, code: str) -> None:
        failed = destination in self._fail or (self._failure_rate > 0 and self._rng.random() < self._failure_rate)
        # Its own transaction: a gateway's record of a send does not roll back with our request.
        async with unit_of_work(self._sessionmaker) as session:
            session.add(
                DevMessage(
                    channel=channel,
                    destination=destination,
                    body=body,
                    code=code,
                    status="failed" if failed else "delivered",
                )
            )
        if failed:
            log.warning("sandbox delivery failed", extra={"channel": channel})
            raise DeliveryFailed(f"sandbox {channel} delivery failed")


class NoProvider:
    """No gateway configured (SMS_PROVIDER=none): every delivery fails, nothing pretends to succeed."""

    async def send(self, *, channel: str, destination: str, body: str, code: str) -> None:
        raise DeliveryFailed(f"no {channel} provider is configured")
