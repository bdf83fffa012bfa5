"""The benchmark's own parts: the small MQTT client's wire format and a round trip through a tiny
in-process MQTT server, the swarm's messages against the device protocol, percentiles and the report files."""

import asyncio
import json
import struct
from pathlib import Path
from xml.etree import ElementTree

import pytest

from contracts.mqtt import (
    EjectResult,
    EjectResultCode,
    Heartbeat,
    Hello,
    ReturnAckResult,
    ReturnReport,
    Status,
    UpChannel,
    up_message_adapter,
)
from device_emulator.bench import report
from device_emulator.bench.mqtt_lite import (
    CONNACK,
    CONNECT,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    LiteClient,
    MqttLiteError,
    Will,
    connect_packet,
    encode_remaining_length,
    publish_packet,
    split_packets,
)
from device_emulator.bench.swarm import DeviceCredentials, Swarm, heartbeat_payload, read_fleet


def test_remaining_length_encoding_round_trips_through_the_splitter():
    for size in (0, 1, 127, 128, 16_383, 16_384, 300_000):
        body = bytes(size)
        buf = bytearray(bytes((0x30,)) + encode_remaining_length(size) + body + b"\xc0\x00")
        packets = split_packets(buf)
        assert packets == [(0x30, body), (0xC0, b"")]
        assert buf == bytearray()


def test_splitter_keeps_a_partial_packet_for_later():
    whole = publish_packet("a/b", b"hello", qos=1, packet_id=7)
    buf = bytearray(whole[:5])
    assert split_packets(buf) == []
    buf += whole[5:]
    [(first, body)] = split_packets(buf)
    assert first >> 4 == PUBLISH
    assert (first >> 1) & 3 == 1
    assert body[:5] == b"\x00\x03a/b"
    assert struct.unpack_from("!H", body, 5)[0] == 7
    assert body[7:] == b"hello"


def test_connect_packet_carries_credentials_and_will():
    pkt = connect_packet("CAB-1", "CAB-1", "secret", keepalive_s=30, will=Will("t/status", b"off"))
    [(first, body)] = split_packets(bytearray(pkt))
    assert first >> 4 == CONNECT
    assert body[:6] == b"\x00\x04MQTT"
    level, flags = body[6], body[7]
    assert level == 4
    assert flags & 0x80 and flags & 0x40 and flags & 0x04 and flags & 0x20 and flags & 0x02
    assert (flags >> 3) & 3 == 1
    assert struct.unpack_from("!H", body, 8)[0] == 30
    assert body.endswith(b"\x00\x06secret")


def test_heartbeat_payload_is_a_valid_protocol_message():
    msg = up_message_adapter.validate_json(heartbeat_payload("ab-1", 1764070000123, -70))
    assert isinstance(msg, Heartbeat)
    assert (msg.msg_id, msg.ts, msg.rssi_dbm) == ("ab-1", 1764070000123, -70)


def test_read_fleet(tmp_path: Path):
    fleet = tmp_path / "fleet.json"
    fleet.write_text(
        json.dumps(
            {
                "broker": {"host": "127.0.0.1", "port": 18830},
                "cabinets": [{"cabinet_id": "CAB-0001", "password": "pw", "slot_count": 8, "slots": []}],
            }
        )
    )
    host, port, devices = read_fleet(fleet)
    assert (host, port) == ("127.0.0.1", 18830)
    assert devices[0].device_id == "CAB-0001"
    assert devices[0].slot_count == 8


class TinyBroker:
    """Just enough MQTT server for one client: CONNACK (refusing password 'bad'), SUBACK, PUBACK, and an echo
    of every PUBLISH back to the client at QoS 1."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.acked: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        next_id = 100
        while data := await reader.read(65536):
            buf += data
            for first, body in split_packets(buf):
                kind = first >> 4
                if kind == CONNECT:
                    writer.write(bytes((CONNACK << 4, 2, 0, 5 if body.endswith(b"bad") else 0)))
                elif kind == SUBSCRIBE:
                    writer.write(bytes((SUBACK << 4, 3)) + body[:2] + b"\x01")
                elif kind == PUBLISH:
                    (tlen,) = struct.unpack_from("!H", body)
                    topic = body[2 : 2 + tlen].decode()
                    pid = body[2 + tlen : 4 + tlen]
                    self.received.append((topic, body[4 + tlen :]))
                    writer.write(bytes((PUBACK << 4, 2)) + pid)
                    next_id += 1
                    writer.write(publish_packet(topic, body[4 + tlen :], qos=1, packet_id=next_id))
                elif kind == PUBACK:
                    self.acked.append(struct.unpack_from("!H", body)[0])
            await writer.drain()
        writer.close()


async def test_lite_client_against_a_tiny_broker():
    broker = TinyBroker()
    server = await asyncio.start_server(broker.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    try:
        client = LiteClient("c1", lambda t, p: got.put_nowait((t, p)))
        await client.connect("127.0.0.1", port, username="u", password="pw")
        await client.subscribe("x/#")
        await client.publish("x/1", b"one")  # waits for the PUBACK
        assert broker.received == [("x/1", b"one")]
        assert await asyncio.wait_for(got.get(), 2) == ("x/1", b"one")
        await asyncio.sleep(0.05)
        assert broker.acked == [101]  # the client acknowledged the broker's QoS 1 delivery
        client.disconnect()
        assert not client.connected

        refused = LiteClient("c2")
        with pytest.raises(MqttLiteError, match="code 5"):
            await refused.connect("127.0.0.1", port, username="u", password="bad")
    finally:
        server.close()
        await server.wait_closed()


def test_percentiles_and_ratios():
    values = list(range(1, 101))
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile([], 50) is None
    s = report.summarize([1.0, 2.0, 3.0])
    assert s["n"] == 3
    assert s["p50"] == 2.0
    assert report.ratio(10.0, 2.0) == 5.0
    assert report.ratio(10.0, None) is None


def test_report_files(tmp_path: Path):
    charts = {
        "latency": report.histogram_svg("lat", {"a": [1.0, 2.0, 5.0, 100.0], "b": []}),
        "throughput": report.line_svg("thr", {"x": [(0.0, 1.0), (1.0, 3.0)]}, "s", "/s"),
        "empty": report.line_svg("none", {}, "s", "/s"),
    }
    page = report.write_report(tmp_path, {"unlock_p50_ms": 1.0}, {"params": {"devices": "3"}, "processes": {}}, charts)
    assert json.loads((tmp_path / "summary.json").read_text()) == {"unlock_p50_ms": 1.0}
    text = page.read_text()
    assert "| unlock_p50_ms | 1.0 |" in text
    assert "![latency](latency.svg)" in text
    for name in charts:
        svg = (tmp_path / f"{name}.svg").read_text()
        root = ElementTree.fromstring(svg)  # well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


async def test_swarm_speaks_the_protocol_through_a_real_broker(broker, svc_session, new_cabinet_id):
    """Two swarm cabinets on the test Mosquitto (per-device credentials and ACLs): status + hello on connect,
    heartbeats, eject answered with the command's bank and slot, a return acknowledged, offline on stop,
    and reconnection after the connection drops."""
    ids = [new_cabinet_id(), new_cabinet_id()]
    ejects: list[tuple[str, str]] = []
    async with svc_session() as svc:
        swarm = Swarm(
            broker.host,
            broker.port,
            [DeviceCredentials(i, f"pw-{i}", 4) for i in ids],  # conftest.cabinet_password
            backoff_initial_s=0.05,
            on_eject=lambda dev, cmd, _at: ejects.append((dev, cmd.cmd_id)),
        )
        try:
            await swarm.start(connect_rate=100)
            assert await swarm.wait_connected(2, timeout_s=5)
            for i in ids:
                [hello] = await svc.wait_for(i, UpChannel.HELLO)
                assert isinstance(hello.msg, Hello) and hello.msg.slots == [] and hello.msg.slot_count == 4
                await svc.wait_for(i, UpChannel.STATUS, lambda m: isinstance(m, Status) and m.online)

            device = swarm.by_id[ids[0]]
            sent = device.send_heartbeat()
            assert sent is not None
            [hb] = await svc.wait_for(ids[0], UpChannel.HEARTBEAT)
            assert hb.msg.ts == sent[0]

            await svc.eject(ids[0], "cmd-1", bank_id="PB-X", slot=2)
            [res] = await svc.wait_for(ids[0], UpChannel.EJECT_RESULT)
            assert isinstance(res.msg, EjectResult)
            assert (res.msg.cmd_id, res.msg.result, res.msg.bank_id, res.msg.slot) == (
                "cmd-1",
                EjectResultCode.OK,
                "PB-X",
                2,
            )
            assert ejects == [(ids[0], "cmd-1")]

            svc.auto_ack = ReturnAckResult.OK
            msg_id, _ = await device.return_bank("PB-X", 2)
            [ret] = await svc.wait_for(ids[0], UpChannel.RETURN)
            assert isinstance(ret.msg, ReturnReport) and ret.msg.msg_id == msg_id

            swarm.drop_all()  # as a broker restart would: back-off, reconnect, hello again
            await svc.wait_for(ids[1], UpChannel.HELLO, count=2, timeout=10)
            assert await swarm.wait_connected(2, timeout_s=10)
            assert swarm.stats.disconnects == 2
        finally:
            await swarm.stop()
        await svc.wait_for(ids[1], UpChannel.STATUS, lambda m: isinstance(m, Status) and not m.online)
