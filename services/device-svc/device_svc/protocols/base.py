"""What a protocol adapter is: topics it reads (per intake), how an up message becomes the platform's,
and how a platform command becomes the maker's (or nothing, when the maker has no such command)."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from contracts.mqtt import DownMessage, UpMessage


class AdapterRejected(Exception):
    """An up message the adapter refuses: `reason` is counted (pb_device_messages_rejected_total) and
    emitted (device.message.rejected); `detail` goes to the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Lookup(Protocol):
    """What an adapter may ask the platform while translating (device-svc answers from its database; the
    test kit from a dict)."""

    async def protocol_of(self, device_id: str) -> str | None:
        """The protocol the registry records for a cabinet; None when it is not a registered cabinet."""
        ...

    async def pending_eject(self, device_id: str, bank_id: str | None, slot: int | None) -> str | None:
        """The cmd_id of the newest eject still waiting for its answer at this cabinet, for this bank or
        (without a bank) this slot; None when there is none."""
        ...


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes


class ProtocolAdapter(ABC):
    name: str
    # A cabinet silent this long is shown offline (its heartbeat period decides; None: the platform's).
    offline_after_s: float | None = None
    # The platform's down message types it carries; the others have no equivalent and are not sent.
    carries: frozenset[str] = frozenset()

    @abstractmethod
    def subscriptions(self) -> Mapping[str, tuple[str, ...]]:
        """Topic filters to subscribe to, per intake name (`critical`, `state`, `telemetry`)."""

    @abstractmethod
    def route(self, topic: str) -> tuple[str, str] | None:
        """(device id, intake name) of one of this adapter's up topics; None for any other topic."""

    @abstractmethod
    async def decode(
        self, device_id: str, topic: str, payload: bytes, received_at: datetime, lookup: Lookup
    ) -> list[UpMessage]:
        """The platform messages one maker's message means (in order), or AdapterRejected."""

    @abstractmethod
    def encode(self, device_id: str, message: DownMessage) -> Outgoing | None:
        """The maker's command for a platform command; None when the maker has none for it."""

    def state_query(self, device_id: str) -> Outgoing | None:
        """The maker's "tell me your slots" command, sent when a cabinet is heard from after a silence (or
        for the first time since device-svc started) without having sent its inventory; None: the maker's
        cabinets always announce it on connect."""
        return None
