"""Messages device-svc sends down to a device: on the platform's command topic, or translated by the
adapter of the cabinet's protocol (protocols/). A cabinet's protocol is fixed when it is registered, so
it is looked up once per device and kept."""

from collections.abc import Awaitable, Callable

from contracts.mqtt import Eject, FirmwareUpdate, Light, Playlist, ReturnAck, Ring, cmd_topic
from device_svc.metrics import COMMANDS_NOT_CARRIED
from device_svc.mqtt.gateway import MqttGateway
from device_svc.protocols.base import Outgoing
from device_svc.protocols.registry import ADAPTERS, NATIVE

ProtocolOf = Callable[[str], Awaitable[str | None]]


async def _native(device_id: str) -> str | None:
    return NATIVE


class Downlink:
    def __init__(self, gateway: MqttGateway, protocol_of: ProtocolOf = _native) -> None:
        self._gateway = gateway
        self._protocol_of = protocol_of
        self._protocols: dict[str, str] = {}

    async def protocol(self, device_id: str) -> str:
        known = self._protocols.get(device_id)
        if known is None:
            # Banks with a module and unregistered ids speak the platform's protocol.
            known = await self._protocol_of(device_id) or NATIVE
            self._protocols[device_id] = known
        return known

    async def carries(self, device_id: str, message_type: str) -> bool:
        adapter = ADAPTERS.get(await self.protocol(device_id))
        return adapter is None or message_type in adapter.carries

    async def send(
        self,
        device_id: str,
        message: Eject | ReturnAck | Ring | Light | Playlist | FirmwareUpdate,
        *,
        retain: bool = False,
    ) -> bool:
        """False when the device's protocol has no such command (nothing is sent). `retain`: the broker keeps
        it as the topic's current state and hands it to the device on every (re)connect (a playlist)."""
        adapter = ADAPTERS.get(await self.protocol(device_id))
        if adapter is None:
            payload = message.model_dump_json().encode()
            await self._gateway.publish(cmd_topic(device_id), payload, qos=1, retain=retain)
            return True
        outgoing = adapter.encode(device_id, message)
        if outgoing is None:
            COMMANDS_NOT_CARRIED.labels(adapter.name, message.type).inc()
            return False
        await self._gateway.publish(outgoing.topic, outgoing.payload, qos=1)
        return True

    async def send_vendor(self, outgoing: Outgoing) -> None:
        """A maker's own command that has no platform equivalent (an adapter's state query)."""
        await self._gateway.publish(outgoing.topic, outgoing.payload, qos=1)
