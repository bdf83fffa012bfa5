"""Kafka consumers of device-svc: `device.eject_bank` commands."""

from contracts import Topic
from device_svc.commands.service import EjectService
from kit.app import ConsumerSpec, Runtime


def consumer_specs(runtime: Runtime) -> list[ConsumerSpec]:
    ejects: EjectService = runtime.extras["ejects"]
    return [ConsumerSpec(topics=[Topic.DEVICE_COMMANDS], handlers={"device.eject_bank": ejects.on_eject_bank})]
