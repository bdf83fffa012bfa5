"""The adapters device-svc runs, and the protocols a cabinet may be registered with."""

from contracts.vendors.volinks import PROTOCOL as VOLINKS
from device_svc.protocols.base import ProtocolAdapter
from device_svc.protocols.volinks import VolinksAdapter

NATIVE = "native"
ADAPTERS: dict[str, ProtocolAdapter] = {VOLINKS: VolinksAdapter()}
PROTOCOLS: tuple[str, ...] = (NATIVE, *ADAPTERS)


def vendor_route(topic: str) -> tuple[ProtocolAdapter, str, str] | None:
    """(adapter, device id, intake name) of a maker's up topic; None for the platform's own topics."""
    if topic.startswith("pb/"):
        return None
    for adapter in ADAPTERS.values():
        routed = adapter.route(topic)
        if routed is not None:
            return adapter, routed[0], routed[1]
    return None


def vendor_subscriptions(intake: str) -> list[str]:
    return [topic for adapter in ADAPTERS.values() for topic in adapter.subscriptions().get(intake, ())]
