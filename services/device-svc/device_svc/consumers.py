"""Kafka consumers of device-svc: `device.eject_bank` commands; users' fault reports about banks; banks
sold to their users (billing's purchased rentals)."""

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope, Topic
from device_svc.commands.service import EjectService
from device_svc.faults import service as faults
from device_svc.lost import service as lost
from device_svc.maintenance import service as maintenance
from kit.app import ConsumerSpec, Runtime
from kit.kafka import LatencyClass


def consumer_specs(runtime: Runtime) -> list[ConsumerSpec]:
    ejects: EjectService = runtime.extras["ejects"]

    async def on_fault_reported(session: AsyncSession, envelope: Envelope) -> None:
        await faults.on_fault_reported(session, envelope)
        await maintenance.on_fault_reported(session, runtime, envelope)

    # A borrow request waits for the eject these commands carry.
    return [
        ConsumerSpec(
            topics=[Topic.DEVICE_COMMANDS],
            handlers={"device.eject_bank": ejects.on_eject_bank},
            latency=LatencyClass.CRITICAL,
        ),
        # Users' fault reports about banks: a group of their own, never in front of an eject command.
        ConsumerSpec(
            topics=[Topic.FAULT_REPORTS],
            handlers={"notify.bank.fault_reported": on_fault_reported},
            name="faults",
        ),
        # A rental that ended with the bank sold to its user: the bank is lost to the fleet.
        ConsumerSpec(topics=[Topic.RENTALS], handlers={"billing.rental.ended": lost.on_rental_ended}, name="rentals"),
    ]
