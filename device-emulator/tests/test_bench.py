"""The benchmark's own parts: the small MQTT client's wire format and a round trip through a tiny
in-process MQTT server, the swarm's messages against the device protocol, percentiles and the report files."""

import asyncio
import contextlib
import itertools
import json
import random
import resource
import socket
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
from contracts.vendors import volinks
from device_emulator.bench import cpu, freshness, report, run, users
from device_emulator.bench.presets import PRESETS, parse_args
from device_emulator.bench.run import raise_open_files
from device_emulator.bench.summary import Attempt, errors_but_ejected
from device_emulator.bench.swarm import DeviceCredentials, Swarm, heartbeat_payload, read_fleet
from device_emulator.bench.volinks_swarm import VolinksSwarmDevice
from kit.mqtt_client import (
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


def _slots(hello: Hello) -> list[tuple[int, str | None, int | None]]:
    return [(s.slot, s.bank_id, s.battery_pct) for s in hello.slots]


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
            # conftest.cabinet_password; the first cabinet starts with bank PB-X in slot 2
            [
                DeviceCredentials(ids[0], f"pw-{ids[0]}", 4, banks=((2, "PB-X", 77),)),
                DeviceCredentials(ids[1], f"pw-{ids[1]}", 4),
            ],
            backoff_initial_s=0.05,
            on_eject=lambda dev, cmd, _at: ejects.append((dev, cmd.cmd_id)),
        )
        try:
            await swarm.start(connect_rate=100)
            assert await swarm.wait_connected(2, timeout_s=5)
            for i, held in zip(ids, ({2: ("PB-X", 77)}, {}), strict=True):
                [hello] = await svc.wait_for(i, UpChannel.HELLO)
                assert isinstance(hello.msg, Hello) and hello.msg.slot_count == 4
                assert _slots(hello.msg) == [(n, *held.get(n, (None, None))) for n in range(1, 5)]
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
            assert device.slots[2] is None  # the bank left its slot

            svc.auto_ack = ReturnAckResult.OK
            msg_id, _ = await device.return_bank("PB-X", 2)
            [ret] = await svc.wait_for(ids[0], UpChannel.RETURN)
            assert isinstance(ret.msg, ReturnReport) and ret.msg.msg_id == msg_id

            swarm.drop_all()  # as a broker restart would: back-off, reconnect, hello again
            await svc.wait_for(ids[1], UpChannel.HELLO, count=2, timeout=10)
            again = await svc.wait_for(ids[0], UpChannel.HELLO, count=2, timeout=10)
            assert isinstance(again[-1].msg, Hello)  # the returned bank is back in slot 2, its battery as returned
            assert _slots(again[-1].msg)[1] == (2, "PB-X", 80)
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


# ------------------------------------------------------------------ issue 9: cost, presets, users, errors


def test_cost_attribution_takes_idle_reports_and_polls_out_of_the_rental():
    idle = cpu.Window(cpu_s=1.0, seconds=10.0)  # 10 % of a core at rest
    telemetry = cpu.Window(cpu_s=2.0, seconds=10.0, reports=2000)  # 1 s above idle for 2,000 reports
    polls = cpu.Window(cpu_s=0.5, seconds=2.0, polls=100)  # 0.3 s above idle for 100 polls
    # 20 s: 2 s idle, 4,000 reports (2 s), 200 polls (0.6 s), leaving 3 s for 100 rentals
    mixed = cpu.Window(cpu_s=7.6, seconds=20.0, reports=4000, rentals=100, polls=200)
    out = cpu.attribute(idle, telemetry, mixed, polls)
    assert out["idle_cpu_pct_of_core"] == pytest.approx(10.0)
    assert out["cpu_ms_per_report"] == pytest.approx(0.5)
    assert out["cpu_ms_per_bench_poll"] == pytest.approx(3.0)
    assert out["cpu_ms_per_rental"] == pytest.approx(30.0)


def test_cost_attribution_without_telemetry_or_without_unlocks():
    idle = cpu.Window(cpu_s=0.5, seconds=10.0)
    rentals_only = cpu.Window(cpu_s=2.5, seconds=20.0, rentals=50)  # direct: (2.5 - 1.0) / 50
    assert cpu.attribute(idle, None, rentals_only)["cpu_ms_per_rental"] == pytest.approx(30.0)
    reports_only = cpu.Window(cpu_s=4.0, seconds=30.0, reports=10_000)  # the load window is telemetry only
    out = cpu.attribute(idle, None, reports_only)
    assert out["cpu_ms_per_report"] == pytest.approx(0.25)
    assert out["cpu_ms_per_rental"] is None
    # reports beside rentals but no telemetry-only window: they cannot be told apart, so no figure
    assert cpu.attribute(idle, None, cpu.Window(5.0, 20.0, reports=100, rentals=10))["cpu_ms_per_rental"] is None
    nothing = cpu.attribute(None, None, None)
    assert set(nothing.values()) == {None}


def test_platform_cpu_counts_whole_trees_with_reaped_children():
    stats = {
        10: cpu.ProcStat(10, 1, own_s=2.0, children_s=5.0),  # a postmaster: 5 s of backends that ended
        11: cpu.ProcStat(11, 10, own_s=1.0, children_s=0.0),
        12: cpu.ProcStat(12, 11, own_s=0.5, children_s=0.0),
        20: cpu.ProcStat(20, 1, own_s=3.0, children_s=1.0),
    }
    assert cpu.tree_cpu_s(10, stats) == pytest.approx(8.5)
    assert sorted(cpu.tree_pids([10], stats)) == [10, 11, 12]
    platform = cpu.Platform({"postgres": [10], "tansu": [20], "gone": [99]}, frozenset({"postgres"}))
    assert cpu.platform_cpu_s(platform, stats) == {"postgres": 8.5, "tansu": 3.0, "gone": 0.0}
    w = cpu.window({"postgres": 8.0, "tansu": 2.0}, {"postgres": 8.5, "tansu": 3.0}, 2.0, reports=3)
    assert (w.cpu_s, w.seconds, w.reports) == (1.5, 2.0, 3)


def test_platform_processes_leave_out_the_emulator_and_read_the_stack_database_port(tmp_path: Path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "billing-svc.pid").write_text("123\n")
    (pids / "emulator.pid").write_text("456\n")
    (tmp_path / "mosquitto").mkdir()
    (tmp_path / "mosquitto" / "mosquitto.pid").write_text("789\n")
    env = {"BILLING_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/pb_billing", "OTHER": "x"}
    assert cpu.stack_databases(env) == (1, {"pb_billing"})
    platform = cpu.platform_processes(tmp_path, env)  # nothing listens on port 1
    assert platform.roots == {"billing-svc": [123], "mosquitto": [789]}
    assert "emulator" not in platform.roots
    assert any("PostgreSQL was not found" in n for n in platform.notes)


def test_this_process_is_found_listening_on_its_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # only PostgreSQL processes are looked at: a Python process listening is not one
        assert cpu.listening_pid(port) is None
    assert cpu.listening_pid(1) is None


def test_presets_fill_in_values_and_explicit_flags_win():
    args = parse_args(["--preset", "overload"])
    assert (args.devices, args.telemetry_rate, args.unlock_rate, args.duration) == (300, 200.0, 15.0, 30.0)
    assert not args.broker_restart
    args = parse_args(["--preset", "city", "--duration", "5", "--devices", "50"])
    assert (args.devices, args.duration, args.telemetry_rate, args.broker_restart) == (50, 5.0, 500.0, True)
    assert parse_args(["--preset", "rental"]).telemetry_rate == 0
    assert parse_args(["--preset", "storm"]).devices == 20_000
    assert parse_args(["--preset", "rest"]).duration == 0
    assert parse_args(["--preset", "sustained"]).duration == 600
    plain = parse_args([])
    assert (plain.devices, plain.idle_s, plain.telemetry_window_s) == (100, 10.0, 10.0)
    assert parse_args(["--smoke"]).idle_s == 2.0
    assert parse_args(["--smoke", "--idle-s", "7"]).idle_s == 7.0
    with pytest.raises(SystemExit):
        parse_args(["--preset", "no-such-run"])
    assert set(PRESETS) == {"overload", "rental", "telemetry", "city", "sustained", "storm", "rest"}


def test_open_file_limit_is_raised_for_the_swarm():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_open_files(100) == hard  # the soft limit goes up to the hard one
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        wanted = hard + 1000
        got = raise_open_files(wanted)
        # beyond the hard limit only with CAP_SYS_RESOURCE (this machine's containers withhold it)
        assert got in (wanted, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (got, got)
    finally:
        with contextlib.suppress(ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, max(hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))


def test_users_file_keeps_every_phone_with_its_newest_refresh_token(tmp_path: Path):
    cache = tmp_path / "state" / "bench-users.json"
    assert users.load_users(cache) == {}
    first = [users.BenchUser("+8613900000001", "a1", refresh_token="r1"), users.BenchUser("+8613900000002", "a2")]
    users.save_users(cache, {}, first)
    assert users.load_users(cache) == {"+8613900000001": "r1", "+8613900000002": None}
    assert cache.stat().st_mode & 0o777 == 0o600  # refresh tokens are credentials
    # the next run used the first user only (its token rotated): the second stays in the file
    again = [users.BenchUser("+8613900000001", "a3", refresh_token="r2")]
    users.save_users(cache, users.load_users(cache), again)
    assert users.load_users(cache) == {"+8613900000001": "r2", "+8613900000002": None}
    # the older file format (phones only) is still read, so its users are logged in, not registered anew
    cache.write_text(json.dumps({"phones": ["+8613900000003"]}))
    assert users.load_users(cache) == {"+8613900000003": None}
    cache.write_text("not json")
    assert users.load_users(cache) == {}


def test_errors_answered_although_the_cabinet_ejected_are_counted_by_correlation_id():
    attempts = [
        Attempt(started=0.0, took_ms=120.0, code=None, correlation_id="ok-1"),
        Attempt(started=1.0, took_ms=5004.0, code="device_no_answer", correlation_id="late-1"),  # ejected anyway
        Attempt(started=2.0, took_ms=80.0, code="bank_battery_low", correlation_id="refused-1"),  # never sent
        Attempt(started=3.0, took_ms=5003.0, code="device_no_answer", correlation_id="lost-1"),  # never arrived
    ]
    ejected = {"ok-1": ("CAB-1", "PB-1"), "late-1": ("CAB-2", "PB-2")}
    assert errors_but_ejected(attempts, ejected) == 1
    assert errors_but_ejected(attempts, {}) == 0


@pytest.mark.parametrize(
    ("title", "database"),
    [
        ("postgres: 15/main: postgres pb_notify 127.0.0.1(51386) idle", "pb_notify"),  # Debian's cluster_name
        ("postgres: pb pb_billing [local] idle", "pb_billing"),
        ("postgres: alice pb_user ::1(5555) SELECT", "pb_user"),
        ("postgres: 15/main: checkpointer ", None),
        ("postgres: 15/main: logical replication launcher ", None),
    ],
)
def test_a_shared_postgres_backend_is_told_by_its_database_whatever_the_cluster_name(title: str, database: str | None):
    assert cpu.backend_database(title) == database


def test_a_volinks_swarm_cabinet_reports_its_fleet_slots_as_a_status_frame(tmp_path: Path):
    """`--volinks N`: the fleet entry's maker and banks reach the swarm; the cabinet's 0x10 (sent on connect
    and for `check`) decodes strictly and holds exactly its banks."""
    fleet = tmp_path / "fleet.json"
    slots = [{"slot": 1, "bank_id": "VL-7001", "battery_pct": 80}, {"slot": 2, "bank_id": None}]
    slots += [{"slot": n, "bank_id": None} for n in range(3, 9)]
    entry = {"cabinet_id": "VL-CAB-0001", "password": "pw", "slot_count": 8, "protocol": "volinks", "slots": slots}
    fleet.write_text(json.dumps({"broker": {}, "cabinets": [entry]}))
    _, _, [creds] = read_fleet(fleet)
    assert creds.protocol == "volinks" and creds.banks == ((1, "VL-7001", 80),)
    device = run.swarm_device(creds, Swarm("127.0.0.1", 1, []))
    assert isinstance(device, VolinksSwarmDevice) and not device.watched and device.will() is None
    status = volinks.decode(device._status())
    assert isinstance(status, volinks.StatusFrame)
    assert [(h.hole, h.state, h.sn) for h in status.holes if h.state] == [(1, 1, volinks.sn_of("VL-7001"))]
    assert len(status.holes) == 8
