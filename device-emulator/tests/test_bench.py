"""The benchmark's own parts: the small MQTT client's wire format and a round trip through a tiny
in-process MQTT server, the swarm's messages against the device protocol, percentiles and the report files."""

import asyncio
import itertools
import json
import random
import struct
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from contracts.mqtt import (
    BankReport,
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
from device_emulator.bench import freshness, report
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
    assert "Location freshness" not in text

    fresh = {"freshness_banks": 2, "freshness_time_scale": 3600.0, "freshness_budget_s": 14400.0}
    fresh |= {"freshness_oldest_position_s": 9000.0, "freshness_oldest_position_real_s": 2.5}
    details = {"params": {}, "freshness": {"schedule": {"every_s": 10800.0, "jitter": 0.2}, "reports_sent": 7}}
    fresh_chart = {"freshness": report.line_svg("fresh", {"oldest age, h": [(1.0, 2.5), (2.0, 1.0)]}, "s", "h")}
    text = report.write_report(tmp_path / "f", fresh, details, fresh_chart).read_text()
    assert "## Location freshness" in text
    assert "| oldest latest-position age among idle banks | 9000.0 s | 2.5 s |" in text
    assert "| budget | 14400.0 s | 4.0 s |" in text
    assert "![freshness](freshness.svg)" in text
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


def test_read_fleet_banks_places_each_module_at_its_cabinet(tmp_path: Path):
    fleet = tmp_path / "fleet.json"
    fleet.write_text(
        json.dumps(
            {
                "broker": {"host": "127.0.0.1", "port": 18830},
                "cabinets": [{"cabinet_id": "CAB-0001", "password": "pw", "lat": 22.5, "lon": 114.1, "slots": []}],
                "banks": [{"bank_id": "PB-000001", "password": "bpw", "cabinet_id": "CAB-0001"}],
            }
        )
    )
    assert freshness.read_fleet_banks(fleet) == [freshness.BankModuleCredentials("PB-000001", "bpw", 22.5, 114.1)]
    fleet.write_text(json.dumps({"cabinets": []}))
    assert freshness.read_fleet_banks(fleet) == []


def test_report_schedule_is_compressed_and_jittered_within_bounds():
    schedule = freshness.ReportSchedule(every_s=3 * 3600, jitter=0.2, time_scale=3600)
    rng = random.Random(1)
    delays = [schedule.next_delay(rng) for _ in range(500)]
    assert all(2.4 <= d <= 3.6 for d in delays)  # 3 h +- 20 % in bank time is 2.4-3.6 s at x3600
    assert max(delays) - min(delays) > 0.8  # jittered, not one fixed period
    assert schedule.longest_s == pytest.approx(3.6 * 3600)
    assert schedule.longest_s < freshness.BUDGET_S


def test_sample_freshness_takes_idle_banks_and_counts_from_the_run_start():
    since = 1_764_000_000.0
    now = since + 10.0

    def iso(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat()

    items = [
        {"id": "PB-1", "state": "in_cabinet", "position_at": iso(now - 2.5)},
        {"id": "PB-2", "state": "in_cabinet", "position_at": iso(since - 3600)},  # stored before this run
        {"id": "PB-3", "state": "rented", "position_at": iso(since - 7200)},  # not idle
        {"id": "PB-4", "state": "maintenance", "position_at": None},  # idle, never positioned
        {"id": "PB-9", "state": "in_cabinet", "position_at": iso(since - 9999)},  # not one of ours
    ]
    s = freshness.sample_freshness(items, {"PB-1", "PB-2", "PB-3", "PB-4", "PB-5"}, now, since, t=3.0)
    assert s.idle == 3
    assert s.unknown == 1  # PB-5 was not listed
    assert s.ages_s == pytest.approx({"PB-1": 2.5, "PB-2": 10.0, "PB-4": 10.0})
    assert s.oldest_age_s == pytest.approx(10.0)

    fresh = freshness.FreshnessSample(t=5.0, idle=1, unknown=0, oldest_age_s=3.0, ages_s={"PB-1": 3.0})
    early = freshness.FreshnessSample(t=1.0, idle=1, unknown=0, oldest_age_s=99.0, ages_s={"PB-1": 99.0})
    out = freshness.freshness_summary(
        [early, s, fresh], banks=4, time_scale=3600, window=(2.0, 100.0), longest_gap_s=3.5
    )
    assert out["freshness_oldest_position_s"] == pytest.approx(36000.0)  # 10 real s x 3600, the early one left out
    assert out["freshness_oldest_position_real_s"] == pytest.approx(10.0)
    assert out["freshness_final_oldest_position_s"] == pytest.approx(10800.0)
    assert out["freshness_stale_banks"] == 2  # PB-2 and PB-4: 36,000 s of bank time, over the 14,400 s budget
    assert out["freshness_budget_s"] == 14400
    assert out["freshness_max_report_gap_s"] == pytest.approx(12600.0)
    assert out["freshness_samples"] == 2
    none = freshness.freshness_summary([], banks=0, time_scale=3600, window=(0, 1), longest_gap_s=None)
    assert none["freshness_oldest_position_s"] is None and none["freshness_stale_banks"] is None


async def test_idle_bank_modules_report_positions_on_a_compressed_schedule(broker, svc_session, new_cabinet_id):
    """Two swarm banks on the test Mosquitto (own credentials, the device ACL): a bank_report with the position on
    connect and no hello, then reports on the compressed schedule (3 h +- 20 % at x54000: 0.16-0.24 s apart)."""
    ids = [new_cabinet_id(), new_cabinet_id()]  # any pool id has a broker login and the device ACL
    creds = [freshness.BankModuleCredentials(i, f"pw-{i}", 22.5 + n / 100, 114.05) for n, i in enumerate(ids)]
    schedule = freshness.ReportSchedule(every_s=3 * 3600, jitter=0.2, time_scale=54_000)
    async with svc_session() as svc:
        banks = freshness.bank_swarm(broker.host, broker.port, creds, backoff_initial_s=0.05)
        pacer = None
        try:
            await banks.start(connect_rate=100)
            assert await banks.wait_connected(2, timeout_s=5)
            pacer = asyncio.create_task(freshness.report_pacer(banks, schedule, random.Random(3)))
            for n, i in enumerate(ids):
                reports = await svc.wait_for(i, UpChannel.BANK_REPORT, count=4, timeout=15)
                msgs = [r.msg for r in reports]
                assert all(isinstance(m, BankReport) for m in msgs)
                assert msgs[0].position is not None and msgs[0].position.lat == pytest.approx(22.5 + n / 100)
                assert all(not m.moving for m in msgs)
                gaps_ms = [b.ts - a.ts for a, b in itertools.pairwise(msgs)]
                assert min(gaps_ms) >= 150  # never sooner than the schedule's shortest period (160 ms)
                assert svc.of(i, UpChannel.HELLO) == []
            emulated = freshness.swarm_banks(banks)
            assert all(b.reports_sent >= 4 and b.longest_gap_s > 0.15 for b in emulated)
        finally:
            await freshness.cancel(pacer)
            await banks.stop()
