"""Cabinet screens (6.3.7): notify-svc's ad playlist reaches each cabinet as a retained `playlist` command
with the items aimed at its region, labelled as advertisements; an older playlist arriving late changes
nothing; a cabinet is sent again only when its part changed; one connecting later gets the current list."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import AdPlaylistItem, AdPlaylistPublished
from contracts.mqtt import MAX_PAYLOAD_BYTES, Playlist, cmd_topic
from device_svc.screens.service import fit, items_for
from kit.testing import EventBus

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def item(title: str, regions: list[str], *, ends_in: timedelta = timedelta(days=1), **over: Any) -> AdPlaylistItem:
    fields: dict[str, Any] = {
        "ad_id": uuid.uuid4(),
        "advertiser": "Lucky Tea",
        "title": title,
        "text": "Half-price tea at the station",
        "media_url": "https://cdn.example.com/tea.png",
        "display_s": 15,
        "regions": regions,
        "starts_at": NOW - timedelta(hours=1),
        "ends_at": NOW + ends_in,
    }
    return AdPlaylistItem(**(fields | over))


def playlist(version: int, *items: AdPlaylistItem) -> AdPlaylistPublished:
    return AdPlaylistPublished(version=version, items=list(items), at=datetime.now(UTC))


def test_a_cabinet_gets_what_is_aimed_at_its_region_and_has_not_ended() -> None:
    futian, shenzhen, beijing = item("Futian", ["440304"]), item("Shenzhen", ["440300"]), item("Beijing", ["110000"])
    everywhere, ended = item("Everywhere", []), item("Ended", [], ends_in=-timedelta(minutes=1))
    mine = items_for([futian, shenzhen, beijing, everywhere, ended], "440304", NOW)
    assert {i.title for i in mine} == {"Futian", "Shenzhen", "Everywhere"}
    assert {i.label for i in mine} == {"advertisement"}
    assert {i.title for i in items_for([futian, everywhere], None, NOW)} == {"Everywhere"}
    chinese = {"text": "充电宝" * 66, "advertiser": "幸运茶" * 33}
    many = [item(f"{n:02d}" + "半价奶茶" * 24, [], **chinese) for n in range(30)]
    cut = items_for(many, "440304", NOW)
    assert len(cut) == 16  # the protocol's longest list
    sent = fit(Playlist(version=1, issued_at=0, items=cut))
    assert len(sent.model_dump_json().encode()) <= MAX_PAYLOAD_BYTES and 0 < len(sent.items) < 16


@pytest.fixture
async def bus(kafka_producer: Any) -> EventBus:
    return EventBus(kafka_producer, "notify-svc")


@pytest.fixture
async def clear_retained(service_account: Any, fleet: dict[str, Any]) -> AsyncIterator[None]:
    """Retained playlists outlive the test in the shared broker: clear them for the next tests."""
    yield
    for cabinet in fleet["cabinets"]:
        await service_account.client.publish(cmd_topic(cabinet["cabinet_id"]), b"", qos=1, retain=True)


async def next_playlist(cab: Any, timeout: float = 10.0) -> Playlist:
    while True:
        msg = await cab.receive(timeout)
        if isinstance(msg, Playlist):
            return msg


async def test_the_playlist_reaches_cabinets_by_region_once_per_change(
    service, fleet, online, cabinets, bus, settings, clear_retained
):
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:  # CAB-0003 placed in Beijing by staff; the others are in Futian
            await conn.execute(text("UPDATE cabinets SET region = '110101' WHERE id = 'CAB-0003'"))
    finally:
        await engine.dispose()
    first, third = await online("CAB-0001"), await online("CAB-0003")
    futian, everywhere = item("Futian tea", ["440304"]), item("Everywhere", [])
    ended = item("Ended", [], ends_in=-timedelta(minutes=1))
    await bus.publish(playlist(1_796_000_000_005, futian, everywhere, ended), key="cabinet_screen")

    got = await next_playlist(first)
    assert sorted(i.title for i in got.items) == ["Everywhere", "Futian tea"]
    assert got.version >= int(datetime.now(UTC).timestamp() * 1000) - 60_000  # the clock: survives a restore
    assert {i.label for i in got.items} == {"advertisement"}
    assert got.items[0].ends_at == int(futian.ends_at.timestamp() * 1000)
    assert [i.title for i in (await next_playlist(third)).items] == ["Everywhere"]

    await bus.publish(playlist(1_796_000_000_004, futian), key="cabinet_screen")  # older, arriving late: dropped
    await bus.publish(playlist(1_796_000_000_006, everywhere), key="cabinet_screen")  # Futian's ad withdrawn
    before, got = got.version, await next_playlist(first)
    assert got.version > before and [i.title for i in got.items] == ["Everywhere"]
    with pytest.raises(TimeoutError):  # CAB-0003's part did not change: nothing sent
        await next_playlist(third, timeout=1.0)

    # A cabinet that connects later gets the current list from the broker (retained).
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "CAB-0002")
    late = await cabinets("CAB-0002", entry["password"])
    assert [i.title for i in (await next_playlist(late)).items] == ["Everywhere"]

    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT version FROM ad_playlists"))).scalar_one() == 1_796_000_000_006
    finally:
        await engine.dispose()


async def test_a_screen_reports_what_it_played_once_per_report(service, online, bank_device, tap, clock):
    """`plays` (protocol v1 addition) becomes one device.ad_plays.reported per report: a report sent again with
    the same msg_id is dropped; a period ending before it starts and a bank sending plays are refused."""
    cab = await online("CAB-0001")
    ad = str(uuid.uuid4())
    report = {
        "type": "plays",
        "msg_id": cab.next_id(),
        "ts": clock(),
        "from_ts": clock(-timedelta(minutes=15)),
        "playlist_version": 1_796_000_000_006,
        "items": [{"ad_id": ad, "plays": 60}],
    }
    await cab.send("plays", report)
    await cab.send("plays", report)  # the cabinet did not get the broker's ack: sent again
    backwards = report | {"msg_id": cab.next_id(), "from_ts": clock(timedelta(minutes=1))}
    await cab.send("plays", backwards)
    bank = await bank_device("PB-000001")
    await bank.send("plays", report | {"msg_id": bank.next_id()})
    got = await tap.wait_for("device.ad_plays.reported", cabinet_id="CAB-0001", report_id=report["msg_id"])
    assert [(i.ad_id, i.plays) for i in got.items] == [(ad, 60)]
    assert got.playlist_version == 1_796_000_000_006
    assert timedelta(minutes=14) < got.period_end - got.period_start <= timedelta(minutes=15, seconds=1)
    await tap.wait_for("device.message.rejected", device_id="CAB-0001", reason="invalid_payload")
    await tap.wait_for("device.message.rejected", device_id="PB-000001", reason="invalid_payload")
    # Every message of CAB-0001 above was handled by now (one device, one intake, in order): the replay made none.
    assert len(tap.matching("device.ad_plays.reported", cabinet_id="CAB-0001")) == 1
