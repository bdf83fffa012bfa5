"""Kafka consumers of device-svc: `device.eject_bank` commands; users' fault reports about banks; banks
sold to their users (billing's purchased rentals); the cabinet screens' ad playlist (notify-svc); users who
deregistered (erasure)."""

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope, Topic
from device_svc.commands.service import EjectService
from device_svc.erasure import service as erasure
from device_svc.faults import service as faults
from device_svc.lost import service as lost
from device_svc.maintenance import service as maintenance
from device_svc.screens import service as screens
from kit.app import ConsumerSpec, Runtime
from kit.kafka import LatencyClass
from kit.periodic import Alarm


def consumer_specs(runtime: Runtime) -> list[ConsumerSpec]:
    ejects: EjectService = runtime.extras["ejects"]
    screen_sync: Alarm = runtime.extras["screen_sync"]

    async def on_fault_reported(session: AsyncSession, envelope: Envelope) -> None:
        await faults.on_fault_reported(session, envelope)
        await maintenance.on_fault_reported(session, runtime, envelope)

    async def on_playlist_published(session: AsyncSession, envelope: Envelope) -> None:
        await screens.on_playlist_published(session, envelope, screen_sync)

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
        # The ad playlist for cabinet screens: stored here, sent to the cabinets by the screen sync.
        ConsumerSpec(
            topics=[Topic.ADS], handlers={"notify.ad_playlist.published": on_playlist_published}, name="screens"
        ),
        # A deregistered user's positions and consents are forgotten (docs/accounts.md "Erasure").
        ConsumerSpec(
            topics=[Topic.USERS], handlers={"user.user.deregistered": erasure.on_user_deregistered}, name="users"
        ),
    ]
