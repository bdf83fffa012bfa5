"""Device messages arrive on three intakes, each its own broker connection, subscription and queue,
so that a flood of one kind never delays another (issue 9: an eject result queued behind bulk
telemetry made billing tell a user "no answer" although the bank had come out):

- critical: what a user or a rental is waiting for (eject results, returns, slot alarms);
- state: presence and slot snapshots (hello, inventory, status), firmware updates' progress and the screens'
  play counts: a connect storm lands here;
- telemetry: periodic reports (heartbeats, bank reports): the bulk of the traffic.

With QoS 1 and acknowledgements after commit the broker sends a connection at most its in-flight
window of unacknowledged messages and queues the rest in order; separate connections give each
intake its own window and queue. A device's messages on different intakes may be handled in another
order than sent: every handler orders state by device time (see telemetry/ingest.py and
registry/repository.py), as it must anyway with several instances on a shared subscription."""

from enum import StrEnum

from contracts.mqtt import TOPIC_ROOT, UpChannel, parse_up_topic
from device_svc.protocols.registry import vendor_route, vendor_subscriptions


class Intake(StrEnum):
    CRITICAL = "critical"
    STATE = "state"
    TELEMETRY = "telemetry"


INTAKE_CHANNELS: dict[Intake, tuple[UpChannel, ...]] = {
    Intake.CRITICAL: (UpChannel.EJECT_RESULT, UpChannel.RETURN, UpChannel.SLOT_ABNORMAL),
    Intake.STATE: (UpChannel.HELLO, UpChannel.INVENTORY, UpChannel.STATUS, UpChannel.FIRMWARE, UpChannel.PLAYS),
    Intake.TELEMETRY: (UpChannel.HEARTBEAT, UpChannel.BANK_REPORT),
}
_INTAKE_OF = {channel.value: intake for intake, channels in INTAKE_CHANNELS.items() for channel in channels}


def intake_of(channel: str) -> Intake:
    """Messages on no known channel cannot arrive (the broker lets devices publish only on known
    channels, and we subscribe only to those); if one does, the state intake refuses it."""
    return _INTAKE_OF.get(channel, Intake.STATE)


def intake_of_topic(topic: str) -> Intake:
    parsed = parse_up_topic(topic)
    if parsed is not None:
        return intake_of(parsed[1])
    vendor = vendor_route(topic)
    return Intake(vendor[2]) if vendor is not None else Intake.STATE


def device_of_topic(topic: str) -> str | None:
    """The device a topic belongs to, the platform's own or a maker's (protocols/)."""
    parsed = parse_up_topic(topic)
    if parsed is not None:
        return parsed[0]
    vendor = vendor_route(topic)
    return vendor[1] if vendor is not None else None


def subscriptions(intake: Intake, shared_group: str | None) -> list[str]:
    """The intake's channels of every device, and the topics of other makers' protocols it reads."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    own = [f"{TOPIC_ROOT}/+/up/{channel.value}" for channel in INTAKE_CHANNELS[intake]]
    return [f"{prefix}{topic}" for topic in own + vendor_subscriptions(intake.value)]


def presence_only(topic: str) -> bool:
    """A `status` (online, or the last will's offline) tells presence and nothing else; any later
    message of the same device on the state intake (another status, a hello, an inventory) tells it
    afresh, so one still waiting behind it makes it moot. After a broker restart each cabinet's queue
    holds its last will, its new online status and its hello: only the hello needs handling."""
    parsed = parse_up_topic(topic)
    return parsed is not None and parsed[1] == UpChannel.STATUS.value
