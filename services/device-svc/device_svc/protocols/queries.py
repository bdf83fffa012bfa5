"""Asking a maker's cabinet for its slots when it is heard from again (docs/vendors.md, "State on
connect"). A cabinet of a maker whose protocol has no connect message (volinks leaves no will and sends
no hello) may come back with banks taken or returned while it was away; until it reports its slots the
registry holds what it last knew. So the first frame of a cabinet after its protocol's offline period
(or the first since this device-svc started) that is not already its inventory makes device-svc send the
adapter's state query (volinks: `check`, answered with the 0x10 status frame).

Kept in memory per process: two replicas on one shared subscription may each ask once; the query only
reads, and its answer is an inventory the platform applies like any other."""

import time
from collections.abc import Callable, Sequence

from contracts.mqtt import Hello, Inventory, UpMessage
from device_svc.protocols.base import Outgoing, ProtocolAdapter

# Without an offline period of its own, a cabinet silent this long is asked again.
DEFAULT_SILENCE_S = 60.0


class StateQueries:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heard: dict[str, float] = {}

    def after(self, adapter: ProtocolAdapter, device_id: str, messages: Sequence[UpMessage]) -> Outgoing | None:
        """The query to send after this cabinet's frame, or None."""
        now = self._clock()
        last = self._heard.get(device_id)
        self._heard[device_id] = now
        if any(isinstance(m, Hello | Inventory) for m in messages):
            return None
        silence = adapter.offline_after_s or DEFAULT_SILENCE_S
        if last is not None and now - last < silence:
            return None
        return adapter.state_query(device_id)
