"""One cabinet against a real mosquitto, with a raw aiomqtt client playing device-svc."""

from __future__ import annotations

import asyncio
import time

import pytest

from contracts.mqtt import (
    EjectResultCode,
    Playlist,
    PlaylistItem,
    ReturnAckResult,
    SlotState,
    Status,
    UpChannel,
    cmd_topic,
)

pytestmark = pytest.mark.asyncio


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_connect_announces_retained_online_and_hello(make_cabinet, svc_session):
    cab = make_cabinet(clock_skew_ms=60_000, heartbeat_s=0.2, firmware="emu-test-7")
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        status = (await svc.wait_for(cab.cabinet_id, UpChannel.STATUS))[0]
        assert status.msg == Status(online=True)
        hello = (await svc.wait_for(cab.cabinet_id, UpChannel.HELLO))[0].msg
        assert hello.firmware == "emu-test-7"
        assert hello.slot_count == 4
        assert hello.slots == cab.inventory()
        assert [s.slot for s in hello.slots] == [1, 2, 3, 4]
        assert hello.slots[0] == SlotState(slot=1, bank_id=f"PB-{cab.cabinet_id}-1", battery_pct=95)
        assert hello.slots[3].bank_id is None
        # ts is the device clock: real time + skew
        assert abs(hello.ts - (now_ms() + 60_000)) < 2_000
        beats = await svc.wait_for(cab.cabinet_id, UpChannel.HEARTBEAT, count=2, timeout=3)
        ids = [hello.msg_id, *(b.msg.msg_id for b in beats)]
        assert len(set(ids)) == len(ids), "every up message has its own msg_id"
        assert cab.tcp_nodelay() is True

    # a subscriber arriving later gets the presence from the broker's retained message
    async with svc_session(cab.cabinet_id) as late:
        got = (await late.wait_for(cab.cabinet_id, UpChannel.STATUS))[0]
        assert got.retain is True
        assert got.msg == Status(online=True)


async def test_eject_ok_empties_the_slot(make_cabinet, svc_session):
    cab = make_cabinet()
    bank = f"PB-{cab.cabinet_id}-2"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        t0 = time.monotonic()
        await svc.eject(cab.cabinet_id, "cmd-ok-1", bank_id=bank)
        result = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        assert time.monotonic() - t0 >= 0.03  # the motor takes its time
        assert result.cmd_id == "cmd-ok-1"
        assert result.result is EjectResultCode.OK
        assert (result.slot, result.bank_id) == (2, bank)
        assert cab.inventory()[1] == SlotState(slot=2)
        assert cab.banks_out() == {bank: 40}
        assert cab.slot_of(bank) is None

        # by slot number too; an empty slot answers bank_not_present
        await svc.eject(cab.cabinet_id, "cmd-slot-1", slot=1)
        await svc.eject(cab.cabinet_id, "cmd-slot-3", slot=3)
        await svc.eject(cab.cabinet_id, "cmd-unknown", bank_id="PB-NOWHERE")
        results = await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT, count=4)
        by_cmd = {r.msg.cmd_id: r.msg for r in results}
        assert by_cmd["cmd-slot-1"].result is EjectResultCode.OK
        assert by_cmd["cmd-slot-1"].bank_id == f"PB-{cab.cabinet_id}-1"
        assert by_cmd["cmd-slot-3"].result is EjectResultCode.BANK_NOT_PRESENT
        assert by_cmd["cmd-unknown"].result is EjectResultCode.BANK_NOT_PRESENT
        assert all(s.bank_id is None for s in cab.inventory())


async def test_repeated_cmd_id_ejects_once_and_answers_the_same(make_cabinet, svc_session):
    cab = make_cabinet()
    bank = f"PB-{cab.cabinet_id}-1"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-dup", bank_id=bank)
        await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT)
        # device-svc retries: same cmd_id, now even addressed to a slot that holds another bank
        await svc.eject(cab.cabinet_id, "cmd-dup", slot=2)
        first, second = (r.msg for r in await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT, count=2))
        assert first.result is EjectResultCode.OK
        fields = ("cmd_id", "result", "slot", "bank_id", "ts")
        assert [getattr(second, f) for f in fields] == [getattr(first, f) for f in fields]
        assert second.msg_id != first.msg_id  # not a transport replay: device-svc must not drop it
        assert cab.stats["ejects"] == 1
        assert len(cab.results) == 1
        assert cab.slot_of(f"PB-{cab.cabinet_id}-2") == 2  # the second slot was not touched


async def test_expired_command_is_not_acted_on(make_cabinet, svc_session):
    cab = make_cabinet()
    skewed = make_cabinet(clock_skew_ms=10 * 60_000)
    async with svc_session() as svc:
        await cab.start()
        await skewed.start()
        assert await cab.wait_online(5)
        assert await skewed.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-old", bank_id=f"PB-{cab.cabinet_id}-1", expires_at=now_ms() - 1_000)
        # valid for 30 s by the server's clock, but the cabinet's clock runs 10 minutes ahead
        await svc.eject(skewed.cabinet_id, "cmd-skew", bank_id=f"PB-{skewed.cabinet_id}-1", ttl_ms=30_000)
        r1 = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        r2 = (await svc.wait_for(skewed.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        for cabinet, result in ((cab, r1), (skewed, r2)):
            assert result.result is EjectResultCode.EXPIRED
            assert cabinet.slot_of(f"PB-{cabinet.cabinet_id}-1") == 1
            assert cabinet.stats["ejects"] == 0
        assert abs(r2.ts - (now_ms() + 10 * 60_000)) < 2_000


async def test_stuck_motor_answers_motor_fault(make_cabinet, svc_session):
    cab = make_cabinet()
    cab.set_faults(stuck_motor=True)
    bank = f"PB-{cab.cabinet_id}-1"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-stuck", bank_id=bank)
        result = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        assert result.result is EjectResultCode.MOTOR_FAULT
        assert (result.slot, result.bank_id) == (1, bank)
        assert cab.slot_of(bank) == 1
        assert cab.banks_out() == {}


async def test_drop_acks_ejects_without_answering(make_cabinet, svc_session):
    cab = make_cabinet()
    cab.set_faults(drop_acks=True)
    bank = f"PB-{cab.cabinet_id}-1"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-lost", bank_id=bank)
        with pytest.raises(TimeoutError):
            await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT, timeout=0.6)
        assert cab.slot_of(bank) is None
        assert bank in cab.banks_out()
        assert cab.stats["results_dropped"] == 1
        # the fault clears; device-svc retries the same command: the first result, and no second eject
        cab.set_faults(drop_acks=False)
        await svc.eject(cab.cabinet_id, "cmd-lost", bank_id=bank)
        result = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        assert result.result is EjectResultCode.OK
        assert (result.slot, result.bank_id) == (1, bank)
        assert cab.stats["ejects"] == 1


async def test_silent_cabinet_ignores_commands(make_cabinet, svc_session):
    cab = make_cabinet(heartbeat_s=0.2)
    cab.set_faults(silent=True)
    bank = f"PB-{cab.cabinet_id}-1"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-void", bank_id=bank)
        await svc.wait_for(cab.cabinet_id, UpChannel.HEARTBEAT, count=2, timeout=3)  # alive, just not listening
        assert svc.of(cab.cabinet_id, UpChannel.EJECT_RESULT) == []
        assert cab.slot_of(bank) == 1
        assert cab.stats["commands"] == 1


async def test_return_report_and_qos1_style_repeat(make_cabinet, svc_session):
    cab = make_cabinet(clock_skew_ms=5_000)
    bank = f"PB-{cab.cabinet_id}-1"
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await svc.eject(cab.cabinet_id, "cmd-rent", bank_id=bank)
        await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT)

        svc.auto_ack = ReturnAckResult.OK
        msg_id = await cab.return_bank(bank, ts_offset_ms=-120_000, repeat=3)
        reports = await svc.wait_for(cab.cabinet_id, UpChannel.RETURN, count=3)
        assert len(reports) == 3
        assert {r.msg.msg_id for r in reports} == {msg_id}
        assert len({r.raw for r in reports}) == 1  # byte-identical redeliveries
        report = reports[0].msg
        assert report.bank_id == bank
        assert report.slot == 1  # the first free slot
        assert report.battery_pct == 95  # the level it had when it left
        assert abs(report.ts - (now_ms() + 5_000 - 120_000)) < 2_000
        assert cab.slot_of(bank) == 1
        assert cab.banks_out() == {}

        ack = await cab.wait_ack(msg_id, 2)
        assert ack is not None
        assert (ack.ref_msg_id, ack.result) == (msg_id, ReturnAckResult.OK)
        await asyncio.sleep(0.2)
        assert [a.ref_msg_id for a in cab.acks] == [msg_id] * 3
        assert cab.last_ack == ack
        assert cab.ack_for(msg_id) == ack

        # a bank from elsewhere into a chosen slot, with a given battery level; the ack says what device-svc thinks
        svc.auto_ack = ReturnAckResult.UNKNOWN_BANK
        other = await cab.return_bank("PB-FOREIGN-9", slot=4, battery_pct=12)
        report = (await svc.wait_for(cab.cabinet_id, UpChannel.RETURN, lambda m: m.msg_id == other))[0].msg
        assert (report.slot, report.bank_id, report.battery_pct) == (4, "PB-FOREIGN-9", 12)
        ack = await cab.wait_ack(other, 2)
        assert ack is not None
        assert ack.result is ReturnAckResult.UNKNOWN_BANK

        # no ack at all -> None after the wait
        svc.auto_ack = None
        silent = await cab.return_bank(f"PB-{cab.cabinet_id}-X")
        assert await cab.wait_ack(silent, 0.3) is None


async def test_return_rejects_impossible_placements(make_cabinet):
    cab = make_cabinet()
    from device_emulator import SlotUnavailable

    with pytest.raises(SlotUnavailable):
        await cab.return_bank("PB-NEW", slot=1)  # occupied
    with pytest.raises(SlotUnavailable):
        await cab.return_bank(f"PB-{cab.cabinet_id}-2")  # already inside
    with pytest.raises(SlotUnavailable):
        await cab.return_bank("PB-NEW", slot=9)  # no such slot
    await cab.return_bank("PB-A")
    await cab.return_bank("PB-B")
    with pytest.raises(SlotUnavailable):
        await cab.return_bank("PB-C")  # full


async def test_abrupt_offline_publishes_the_last_will(make_cabinet, svc_session):
    cab = make_cabinet()
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        await cab.go_offline()
        assert not cab.online
        will = (await svc.wait_for(cab.cabinet_id, UpChannel.STATUS, lambda m: not m.online))[0]
        assert will.msg == Status(online=False)

        # a return while offline is queued and goes out after the reconnect, after the hello
        msg_id = await cab.return_bank("PB-WHILE-OFF", ts_offset_ms=0)
        await asyncio.sleep(0.3)
        assert cab.online is False  # it stays down until told otherwise
        assert svc.of(cab.cabinet_id, UpChannel.RETURN) == []

        assert await cab.go_online(timeout_s=5)
        await svc.wait_for(cab.cabinet_id, UpChannel.STATUS, lambda m: m.online, count=2)
        await svc.wait_for(cab.cabinet_id, UpChannel.HELLO, count=2)
        report = (await svc.wait_for(cab.cabinet_id, UpChannel.RETURN))[0].msg
        assert report.msg_id == msg_id
        hellos = svc.of(cab.cabinet_id, UpChannel.HELLO)
        assert svc.received.index(hellos[1]) < svc.received.index(svc.of(cab.cabinet_id, UpChannel.RETURN)[0])

    async with svc_session(cab.cabinet_id) as late:
        got = (await late.wait_for(cab.cabinet_id, UpChannel.STATUS))[0]
        assert (got.retain, got.msg.online) == (True, True)


async def test_clean_stop_leaves_retained_offline(make_cabinet, svc_session):
    cab = make_cabinet()
    await cab.start()
    assert await cab.wait_online(5)
    await cab.stop()
    async with svc_session(cab.cabinet_id) as late:
        got = (await late.wait_for(cab.cabinet_id, UpChannel.STATUS))[0]
        assert (got.retain, got.msg.online) == (True, False)


async def test_broker_refuses_a_wrong_password(make_cabinet, svc_session):
    cab = make_cabinet(password="not-the-password")
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert not await cab.wait_online(1.0)
        assert cab.stats["connect_failures"] >= 2  # it keeps retrying with back-off
        assert cab.last_error is not None
        assert "authori" in cab.last_error.lower()
        assert svc.received == []


async def test_reconnects_after_the_broker_restarts(broker_factory, make_cabinet, svc_session):
    private = broker_factory()
    cab = make_cabinet(on=private)
    await cab.start()
    assert await cab.wait_online(5)
    private.stop()
    await asyncio.sleep(0.3)
    assert not cab.online
    private.start()
    assert await cab.wait_online(10)
    assert cab.stats["connects"] == 2
    # the fresh broker knows the cabinet is online only because it announced itself again
    async with svc_session(cab.cabinet_id, on=private) as svc:
        got = (await svc.wait_for(cab.cabinet_id, UpChannel.STATUS))[0]
        assert (got.retain, got.msg.online) == (True, True)
        await svc.eject(cab.cabinet_id, "cmd-after-restart", slot=2)
        result = (await svc.wait_for(cab.cabinet_id, UpChannel.EJECT_RESULT))[0].msg
        assert result.result is EjectResultCode.OK


async def test_duplicated_delayed_and_lost_cabinet_messages(make_cabinet, svc_session):
    """The generic message faults (shared with bank modules): every up message, inventories and
    return reports included, can be repeated with its msg_id, overtaken by newer ones, or lost."""
    cab = make_cabinet()
    async with svc_session(cab.cabinet_id) as svc:
        await cab.start()
        assert await cab.wait_online(5)
        cab.set_faults(duplicate=2)
        dup_id = await cab.publish_inventory()
        got = await svc.wait_for(cab.cabinet_id, UpChannel.INVENTORY, lambda m: m.msg_id == dup_id, count=2)
        assert len({r.raw for r in got}) == 1
        cab.set_faults(duplicate=1, delay_s=0.5)
        late_id = await cab.publish_inventory()
        cab.set_faults(delay_s=0)
        on_time_id = await cab.publish_inventory()
        await svc.wait_for(cab.cabinet_id, UpChannel.INVENTORY, lambda m: m.msg_id == late_id, timeout=3)
        order = [r.msg.msg_id for r in svc.of(cab.cabinet_id, UpChannel.INVENTORY)]
        assert order.index(on_time_id) < order.index(late_id)  # the older snapshot arrived last
        cab.set_faults(drop_messages=True)
        lost_id = await cab.publish_inventory()
        cab.set_faults(drop_messages=False)
        next_id = await cab.publish_inventory()
        await svc.wait_for(cab.cabinet_id, UpChannel.INVENTORY, lambda m: m.msg_id == next_id)
        assert lost_id not in [r.msg.msg_id for r in svc.of(cab.cabinet_id, UpChannel.INVENTORY)]
        assert cab.stats["dropped"] == 1
        assert cab.describe()["faults"]["delay_s"] == 0.0


async def screen_version(cab, version: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while cab.screen()["version"] != version:
        assert time.monotonic() < deadline, f"the screen never got playlist version {version}"
        await asyncio.sleep(0.05)


async def test_the_screen_plays_the_retained_playlist_within_each_schedule(make_cabinet, svc_session):
    cab = make_cabinet()
    now = now_ms()

    def ad(title: str, starts: int, ends: int) -> PlaylistItem:
        return PlaylistItem(
            ad_id=title, advertiser="Lucky Tea", title=title, text="Tea", display_s=10, starts_at=starts, ends_at=ends
        )

    on_air, later = ad("On air", now - 60_000, now + 600_000), ad("Tomorrow", now + 86_400_000, now + 90_000_000)
    async with svc_session(cab.cabinet_id) as svc:
        # Sent retained before the cabinet connects: the broker hands it over on connect.
        first = Playlist(version=2, issued_at=now, items=[on_air, later])
        await svc.client.publish(cmd_topic(cab.cabinet_id), first.model_dump_json(), qos=1, retain=True)
        await cab.start()
        assert await cab.wait_online(5)
        await screen_version(cab, 2)
        screen = cab.screen()
        assert [a["title"] for a in screen["on_air"]] == ["On air"]
        assert screen["showing"] == {"label": "advertisement", "title": "On air", "text": "Tea"}
        # An older version (a late delivery) does not replace it; an empty list clears the screen.
        stale = Playlist(version=1, issued_at=now, items=[later])
        await svc.client.publish(cmd_topic(cab.cabinet_id), stale.model_dump_json(), qos=1)
        cleared = Playlist(version=3, issued_at=now, items=[])
        await svc.client.publish(cmd_topic(cab.cabinet_id), cleared.model_dump_json(), qos=1, retain=True)
        await screen_version(cab, 3)
        assert cab.screen()["showing"] is None and cab.stats["playlists"] == 2
        assert cab.stats["invalid_commands"] == 0
        await svc.client.publish(cmd_topic(cab.cabinet_id), b"", qos=1, retain=True)


async def test_the_screen_counts_each_turn_and_reports_the_plays(make_cabinet, svc_session):
    """Each turn an ad begins on the screen is one play; `plays` reports them since the last report (the fault
    `duplicate` sends it twice under one msg_id, as a cabinet that missed the broker's ack would)."""
    cab = make_cabinet()
    now = now_ms()

    def ad(title: str, display_s: int) -> PlaylistItem:
        return PlaylistItem(
            ad_id=title,
            advertiser="Lucky Tea",
            title=title,
            text="Tea",
            display_s=display_s,
            starts_at=now - 60_000,
            ends_at=now + 600_000,
        )

    async with svc_session(cab.cabinet_id) as svc:
        shown = Playlist(version=7, issued_at=now, items=[ad("Tea", 10), ad("Cake", 5)])
        await svc.client.publish(cmd_topic(cab.cabinet_id), shown.model_dump_json(), qos=1, retain=True)
        await cab.start()
        assert await cab.wait_online(5)
        await screen_version(cab, 7)
        # Counted up to a minute ahead of the clock and reported (what played since the playlist came), then
        # 30 s more of screen time: two 15-second cycles of the two ads.
        cab.count_plays(now + 60_000)
        earlier = await cab.report_plays()
        cab.count_plays(now + 90_000)
        cab.set_faults(duplicate=2)
        report = await cab.report_plays()
        assert report is not None and report.playlist_version == 7
        assert {i.ad_id: i.plays for i in report.items} == {"Tea": 2, "Cake": 2}
        got = await svc.wait_for(cab.cabinet_id, UpChannel.PLAYS, lambda m: m.msg_id == report.msg_id, count=2)
        assert len(got) == 2  # the same report twice: device-svc counts it once (its msg_id)
        assert cab.screen()["reports_sent"] == (2 if earlier is not None else 1)
        await svc.client.publish(cmd_topic(cab.cabinet_id), b"", qos=1, retain=True)
