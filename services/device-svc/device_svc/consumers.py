"""Kafka consumers of device-svc: `device.eject_bank` commands."""

from contracts import Topic
from device_svc.commands.service import EjectService
from kit.app import ConsumerSpec, Runtime
from kit.kafka import LatencyClass


def consumer_specs(runtime: Runtime) -> list[ConsumerSpec]:
    ejects: EjectService = runtime.extras["ejects"]
    # A borrow request waits for the eject these commands carry.
    return [
        ConsumerSpec(
            topics=[Topic.DEVICE_COMMANDS],
            handlers={"device.eject_bank": ejects.on_eject_bank},
            latency=LatencyClass.CRITICAL,
        )
    ]
