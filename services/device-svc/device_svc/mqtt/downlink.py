"""Messages device-svc sends down to a device's command topic."""

from contracts.mqtt import Eject, Light, ReturnAck, Ring, cmd_topic
from device_svc.mqtt.gateway import MqttGateway


class Downlink:
    def __init__(self, gateway: MqttGateway) -> None:
        self._gateway = gateway

    async def send(self, device_id: str, message: Eject | ReturnAck | Ring | Light) -> None:
        await self._gateway.publish(cmd_topic(device_id), message.model_dump_json().encode(), qos=1)
