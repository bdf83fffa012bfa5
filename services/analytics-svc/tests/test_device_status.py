"""Communication status and operating state per region (issue 11) on a small data set computed by hand.

| device  | kind    | division      | presence (event time order)                 | stock (present/slots) |
| CAB-S1  | cabinet | 440304 Futian | online 10 min ago                           | 0 / 8: empty          |
| CAB-S2  | cabinet | 440304 Futian | offline, last seen 2 h ago                  | 8 / 8: full           |
| CAB-S3  | cabinet | 440303 Luohu  | offline, last seen 3 days ago               | 3 / 8                 |
| CAB-S4  | cabinet | 440304 Futian | never heard                                 | 2 / 8                 |
| PB-S1   | bank    | 440304 Futian | online 50 min ago, offline 30 min ago (sent first) | -              |
Silent = offline for an hour or more, or never heard."""

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import BankReturned, DevicePresenceChanged, DeviceTelemetryReported, PresenceReason
from contracts.regions import region_at

pytestmark = pytest.mark.integration

FUTIAN = region_at(22.54, 114.05)
LUOHU = region_at(22.57, 114.14)


def stock(cabinet: str, region, present: int, at: datetime) -> DeviceTelemetryReported:
    return DeviceTelemetryReported(
        device_id=cabinet, reported_at=at, received_at=at, banks_present=present, slot_count=8, region=region
    )


def presence(device: str, kind: str, online: bool, at: datetime) -> DevicePresenceChanged:
    reason = PresenceReason.CONNECT if online else PresenceReason.HEARTBEAT_SILENCE
    return DevicePresenceChanged(
        device_id=device,
        device_kind=kind,
        online=online,
        reason=reason,
        at=at,
        last_seen_at=at,  # type: ignore[arg-type]
    )


async def test_status_per_region_and_silent_devices(client, bus, processed, admin) -> None:
    assert (FUTIAN.division_code, LUOHU.division_code) == ("440304", "440303")
    now = datetime.now(UTC)
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    events = [
        await bus.publish(stock("CAB-S1", FUTIAN, 0, ago(minutes=5)), "CAB-S1"),
        await bus.publish(stock("CAB-S2", FUTIAN, 8, ago(minutes=5)), "CAB-S2"),
        await bus.publish(stock("CAB-S3", LUOHU, 3, ago(minutes=5)), "CAB-S3"),
        await bus.publish(stock("CAB-S4", FUTIAN, 2, ago(minutes=5)), "CAB-S4"),
        await bus.publish(presence("CAB-S1", "cabinet", True, ago(minutes=10)), "CAB-S1"),
        await bus.publish(presence("CAB-S2", "cabinet", False, ago(hours=2)), "CAB-S2"),
        await bus.publish(presence("CAB-S3", "cabinet", False, ago(days=3)), "CAB-S3"),
        await bus.publish(presence("PB-S1", "bank", False, ago(minutes=30)), "PB-S1"),
        await bus.publish(presence("PB-S1", "bank", True, ago(minutes=50)), "PB-S1"),  # older: changes nothing
        await bus.publish(
            BankReturned(
                report_id="r-s1",
                bank_id="PB-S1",
                cabinet_id="CAB-S1",
                slot=1,
                battery_pct=80,
                returned_at=ago(hours=1),
                device_reported_at=ago(hours=1),
                received_at=ago(hours=1),
                region=FUTIAN,
            ),
            "PB-S1",
        ),
    ]
    await processed(events)
    reader = admin("operator")

    body = (await client.get("/v1/analytics/device-status", params={"region": "440300"}, headers=reader)).json()
    rows = {(r["division_code"], r["kind"]): r for r in body["rows"]}
    keys = ["devices", "online", "offline", "online_share", "never_heard", "silent"]
    keys += ["seen_under_1h", "seen_1h_to_24h", "seen_1d_to_7d", "seen_over_7d", "empty", "full"]
    pick = lambda r: [r[k] for k in keys]  # noqa: E731
    assert set(rows) == {("440303", "cabinet"), ("440304", "cabinet"), ("440304", "bank")}
    assert pick(rows[("440304", "cabinet")]) == [3, 1, 1, 0.5, 1, 1, 0, 1, 0, 0, 1, 1]
    assert pick(rows[("440303", "cabinet")]) == [1, 0, 1, 0.0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert pick(rows[("440304", "bank")]) == [1, 0, 1, 0.0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert rows[("440304", "cabinet")]["name"] == "Futian"

    city = (
        await client.get("/v1/analytics/device-status", params={"region": "440300", "level": "city"}, headers=reader)
    ).json()["rows"]
    cabinets = next(r for r in city if r["kind"] == "cabinet")
    assert (cabinets["division_code"], *pick(cabinets)) == ("440300", 4, 1, 2, 0.3333, 1, 2, 0, 1, 1, 0, 1, 1)

    silent = (await client.get("/v1/analytics/silent-devices", params={"region": "440300"}, headers=reader)).json()
    assert [(r["device_id"], r["last_seen_at"] is None) for r in silent["rows"]] == [
        ("CAB-S4", True),
        ("CAB-S3", False),
        ("CAB-S2", False),
    ]
    one_day = {"silent_after_s": 86400, "kind": "cabinet"}
    silent = (await client.get("/v1/analytics/silent-devices", params=one_day, headers=reader)).json()
    assert [r["device_id"] for r in silent["rows"]] == ["CAB-S4", "CAB-S3"]
    csv = (await client.get("/v1/analytics/device-status", params={"format": "csv"}, headers=reader)).text
    assert csv.splitlines()[0].startswith("division_code,name,kind,devices,online,offline,online_share")
    assert (await client.get("/v1/analytics/device-status", headers=admin("support"))).status_code == 403
