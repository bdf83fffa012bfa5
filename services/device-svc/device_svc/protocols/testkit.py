"""The behaviours every protocol adapter must show (docs/vendors.md). A new adapter's tests call
`check_adapter(adapter, samples)` with a few real messages of its maker; it fails on the first broken rule.
No broker or database: the platform's answers come from `FakeLookup`."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contracts.mqtt import (
    Eject,
    EjectResult,
    Heartbeat,
    Hello,
    Inventory,
    Light,
    ReturnAck,
    ReturnAckResult,
    ReturnReport,
    Ring,
    UpChannel,
    UpMessage,
    up_message_adapter,
    up_topic,
)
from device_svc.protocols.base import AdapterRejected, ProtocolAdapter
from device_svc.protocols.registry import vendor_route


@dataclass
class FakeLookup:
    protocols: dict[str, str] = field(default_factory=dict)
    pending: dict[tuple[str, str | None, int | None], str] = field(default_factory=dict)

    async def protocol_of(self, device_id: str) -> str | None:
        return self.protocols.get(device_id)

    async def pending_eject(self, device_id: str, bank_id: str | None, slot: int | None) -> str | None:
        return self.pending.get((device_id, bank_id, slot))


@dataclass(frozen=True)
class Samples:
    """Real messages of one cabinet of the maker (`device_id`), as they arrive: (topic, payload)."""

    device_id: str
    heartbeat: tuple[str, bytes]
    status: tuple[str, bytes]  # the full inventory
    eject_ok: tuple[str, bytes]  # the answer to an eject of `ejected_bank`
    ejected_bank: str
    returned: tuple[str, bytes]  # a return of `returned_bank`
    returned_bank: str
    malformed: Sequence[tuple[str, bytes]] = ()


def _matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    if len(f) != len(t) and "#" not in f:
        return False
    for a, b in itertools.zip_longest(f, t):
        if a == "#":
            return True
        if a != "+" and a != b:
            return False
    return True


async def _decode(adapter: ProtocolAdapter, lookup: FakeLookup, sample: tuple[str, bytes]) -> list[UpMessage]:
    topic, payload = sample
    routed = adapter.route(topic)
    assert routed is not None, f"{adapter.name} does not route its own topic {topic}"
    return await adapter.decode(routed[0], topic, payload, datetime.now(UTC), lookup)


async def _refused(adapter: ProtocolAdapter, lookup: FakeLookup, sample: tuple[str, bytes], reason: str) -> None:
    try:
        got = await _decode(adapter, lookup, sample)
    except AdapterRejected as exc:
        refused = exc
    else:
        raise AssertionError(f"{adapter.name} accepted {sample[1][:40]!r} as {got}")
    if refused.reason != reason:
        raise AssertionError(f"refused as {refused.reason}, expected {reason}: {refused.detail}")


async def check_adapter(adapter: ProtocolAdapter, samples: Samples) -> None:
    device = samples.device_id
    lookup = FakeLookup(protocols={device: adapter.name})

    # Routing: its up topics name the device and an intake, are subscribed to, and are found by the registry.
    filters = [f for topics in adapter.subscriptions().values() for f in topics]
    assert set(adapter.subscriptions()) <= {"critical", "state", "telemetry"}
    for sample in (samples.heartbeat, samples.status, samples.eject_ok, samples.returned):
        routed = adapter.route(sample[0])
        assert routed is not None, sample[0]
        assert routed[0] == device, sample[0]
        assert any(_matches(f, sample[0]) for f in filters), f"nobody subscribes to {sample[0]}"
        found = vendor_route(sample[0])
        assert found is not None, "the adapter is not in protocols/registry.py"
        assert found[0] is adapter, "another adapter claims the topic"
    assert adapter.route(up_topic(device, UpChannel.HELLO)) is None
    assert adapter.offline_after_s is None or adapter.offline_after_s > 0

    # Up: each sample is the platform's message it means, valid by the platform's own strict schema.
    beat = await _decode(adapter, lookup, samples.heartbeat)
    assert [type(m) for m in beat] == [Heartbeat]
    status = await _decode(adapter, lookup, samples.status)
    assert len(status) == 1
    assert isinstance(status[0], Hello | Inventory)
    lookup.pending[(device, samples.ejected_bank, None)] = "2f1c4f0e-0000-4000-8000-000000000001"
    result = await _decode(adapter, lookup, samples.eject_ok)
    assert len(result) == 1
    assert isinstance(result[0], EjectResult)
    assert result[0].cmd_id == "2f1c4f0e-0000-4000-8000-000000000001", "an eject result is matched to its command"
    assert result[0].result == "ok"
    returned = await _decode(adapter, lookup, samples.returned)
    assert len(returned) == 1
    assert isinstance(returned[0], ReturnReport)
    assert returned[0].bank_id == samples.returned_bank
    for message in beat + status + result + returned:
        assert up_message_adapter.validate_json(message.model_dump_json()) == message
    ids = {getattr(m, "msg_id", None) for m in beat + status + result + returned}
    assert len(ids) == 4, "every translated message has its own msg_id"

    # Refused, never crashing: the wrong device, the wrong protocol, malformed and cut-off messages.
    await _refused(adapter, FakeLookup(), samples.heartbeat, "unknown_device")
    await _refused(adapter, FakeLookup(protocols={device: "native"}), samples.heartbeat, "protocol_mismatch")
    broken = list(samples.malformed)
    for topic, payload in (samples.status, samples.eject_ok, samples.returned, samples.heartbeat):
        broken += [(topic, payload[:n]) for n in range(len(payload))]
        broken += [(topic, payload[:-1] + bytes([payload[-1] ^ 0x01]))]
    for sample in broken:
        await _refused(adapter, lookup, sample, "malformed_frame")

    # Down: an eject goes out on a topic that is not one of its up topics; what it does not carry is not sent.
    now = int(datetime.now(UTC).timestamp() * 1000)
    eject = Eject(cmd_id="c1", issued_at=now, expires_at=now + 5000, bank_id=samples.ejected_bank, slot=1)
    out = adapter.encode(device, eject)
    assert out is not None
    assert adapter.route(out.topic) is None
    assert out.payload
    others = (
        ReturnAck(ref_msg_id="m", result=ReturnAckResult.OK),
        Light(cmd_id="l", expires_at=now, on=True, duration_s=60),
        Ring(cmd_id="r", expires_at=now, duration_s=5),
    )
    for command in others:
        sent = adapter.encode(device, command)
        assert (sent is not None) == (command.type in adapter.carries), command.type
