"""Ads: app banners on air in the viewer's region, labelled, counted once per viewer and day; cabinet
screens' playlist published as one versioned event per change; staff only with `ads:manage`."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.events import AdPlaylistPublished
from kit.testing import staff_actions

pytestmark = pytest.mark.integration

ADMIN = "/v1/admin/ads"


def _ad(**over: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    ad: dict[str, Any] = {
        "slot": "app_banner",
        "advertiser": "Lucky Tea",
        "title": "Half-price tea",
        "text": "Show this banner at any Lucky Tea in Futian.",
        "media_url": "https://cdn.example.com/tea.png",
        "link_url": "https://tea.example.com/offer",
        "regions": ["440304"],
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    return ad | over


async def test_banners_by_region_and_schedule_labelled_and_counted_once(client, auth, staff, settings):
    operator, user = staff(roles=("operator",)), uuid.uuid4()
    futian = (await client.post(ADMIN, headers=operator, json=_ad())).json()
    everywhere = (await client.post(ADMIN, headers=operator, json=_ad(title="Everywhere", regions=[]))).json()
    shenzhen = (await client.post(ADMIN, headers=operator, json=_ad(title="Shenzhen", regions=["440300"]))).json()
    later = _ad(
        title="Tomorrow",
        starts_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        ends_at=(datetime.now(UTC) + timedelta(days=2)).isoformat(),
    )
    assert (await client.post(ADMIN, headers=operator, json=later)).status_code == 201
    screen = _ad(slot="cabinet_screen", link_url=None, title="On a screen")
    assert (await client.post(ADMIN, headers=operator, json=screen)).status_code == 201

    async def shown(**params: Any) -> set[str]:
        answer = await client.get("/v1/ads", headers=auth(user), params=params)
        assert answer.status_code == 200, answer.text
        assert {a["label"] for a in answer.json()["items"]} <= {"advertisement"}
        return {a["title"] for a in answer.json()["items"]}

    assert await shown(region="440304") == {"Half-price tea", "Everywhere", "Shenzhen"}
    assert await shown(region="440305") == {"Everywhere", "Shenzhen"}  # Nanshan: in Shenzhen, not Futian
    assert await shown(region="440300") == {"Everywhere", "Shenzhen"}  # known only by city: no district's ad
    assert await shown(region="110101") == {"Everywhere"}
    assert await shown() == {"Everywhere"}
    assert await shown(lat=22.54, lon=114.05) == {"Half-price tea", "Everywhere", "Shenzhen"}  # a point in Futian

    ad_id = futian["ad_id"]
    first = await client.post(f"/v1/ads/{ad_id}/impressions", headers=auth(user))
    assert (first.status_code, first.json()["counted"]) == (200, True)
    again = await client.post(f"/v1/ads/{ad_id}/impressions", headers=auth(user))
    assert again.json()["counted"] is False
    assert (await client.post(f"/v1/ads/{ad_id}/impressions", headers=auth(uuid.uuid4()))).json()["counted"] is True
    tap = await client.post(f"/v1/ads/{ad_id}/clicks", headers=auth(user))
    assert (tap.json()["counted"], tap.json()["link_url"]) == (True, "https://tea.example.com/offer")
    assert (await client.post(f"/v1/ads/{ad_id}/clicks", headers=auth(user))).json()["counted"] is False
    counts = (await client.get(f"{ADMIN}/{ad_id}", headers=operator)).json()["counts"]
    assert counts == {"impressions": 2, "clicks": 1, "screens": None}

    withdrawn = await client.post(f"{ADMIN}/{everywhere['ad_id']}/withdraw", headers=operator)
    assert withdrawn.json()["withdrawn_at"] is not None
    twice = await client.post(f"{ADMIN}/{everywhere['ad_id']}/withdraw", headers=operator)
    assert (twice.status_code, twice.json()["code"]) == (409, "ad_withdrawn")
    # The withdrawal is on the platform's audit trail; the refused second one is not (kit.audit, issue 15).
    withdrawals = await staff_actions(settings.database_url, "ad.withdraw")
    assert [(a.target_type, a.target_id) for a in withdrawals] == [("ad", everywhere["ad_id"])]
    assert withdrawals[0].before["withdrawn_at"] is None and withdrawals[0].after["withdrawn_at"]
    [created] = [
        a for a in await staff_actions(settings.database_url, "ad.create") if a.target_id == everywhere["ad_id"]
    ]
    assert (created.before, created.after["title"]) == ({}, "Everywhere")  # the create names its new ad
    assert await shown(region="440304") == {"Half-price tea", "Shenzhen"}
    off_air = await client.post(f"/v1/ads/{everywhere['ad_id']}/clicks", headers=auth(user))
    assert (off_air.status_code, off_air.json()["code"]) == (409, "ad_not_running")
    listed = (await client.get(ADMIN, headers=operator, params={"slot": "app_banner"})).json()["items"]
    assert {a["title"] for a in listed} == {"Half-price tea", "Everywhere", "Shenzhen", "Tomorrow"}
    assert shenzhen["label"] == "advertisement"


async def test_bad_input_and_permissions(client, auth, staff):
    operator, user = staff(roles=("operator",)), uuid.uuid4()
    now = datetime.now(UTC)
    for bad in (
        _ad(slot="billboard"),
        _ad(ends_at=(now - timedelta(days=1)).isoformat()),  # ends before it starts
        _ad(ends_at=(now + timedelta(days=400)).isoformat()),
        _ad(starts_at="2026-12-05T10:00:00"),  # no time zone
        _ad(media_url="http://cdn.example.com/tea.png"),  # not https
        _ad(link_url="javascript:alert(1)"),
        _ad(regions=["44030"]),
        _ad(slot="cabinet_screen"),  # a screen cannot be tapped: no link
        _ad(display_s=2),
        _ad(title=""),
        _ad(label="not an ad"),
    ):
        refused = await client.post(ADMIN, headers=operator, json=bad)
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), bad
    assert (await client.post(ADMIN, headers=staff(roles=("support",)), json=_ad())).status_code == 403
    assert (await client.post(ADMIN, headers=auth(user), json=_ad())).status_code == 403
    assert (await client.get("/v1/ads")).status_code == 401
    bad_region = await client.get("/v1/ads", headers=auth(user), params={"region": "Futian"})
    assert bad_region.status_code == 422
    missing = await client.post(f"/v1/ads/{uuid.uuid4()}/clicks", headers=auth(user))
    assert (missing.status_code, missing.json()["code"]) == (404, "ad_not_found")
    screen = (await client.post(ADMIN, headers=operator, json=_ad(slot="cabinet_screen", link_url=None))).json()
    counted = await client.post(f"/v1/ads/{screen['ad_id']}/impressions", headers=auth(user))
    assert (counted.status_code, counted.json()["code"]) == (409, "not_an_app_banner")
    assert (await client.get(f"{ADMIN}/{uuid.uuid4()}", headers=operator)).status_code == 404


async def test_each_cabinet_screen_change_publishes_the_whole_playlist_in_version_order(client, staff, recorder):
    operator = staff(roles=("operator",))
    first = (
        await client.post(ADMIN, headers=operator, json=_ad(slot="cabinet_screen", link_url=None, display_s=20))
    ).json()
    banner = await client.post(ADMIN, headers=operator, json=_ad(title="A banner only"))
    assert banner.status_code == 201
    second = (
        await client.post(
            ADMIN, headers=operator, json=_ad(slot="cabinet_screen", link_url=None, title="Second", regions=[])
        )
    ).json()

    def playlist_with(*ids: str) -> Any:
        def match(e: Any) -> bool:
            return isinstance(e.data, AdPlaylistPublished) and {str(i.ad_id) for i in e.data.items} == set(ids)

        return match

    one = (await recorder.wait_for(playlist_with(first["ad_id"]))).data
    both = (await recorder.wait_for(playlist_with(first["ad_id"], second["ad_id"]))).data
    assert isinstance(one, AdPlaylistPublished) and isinstance(both, AdPlaylistPublished)
    assert both.version > one.version >= int(datetime.now(UTC).timestamp() * 1000) - 60_000
    item = next(i for i in both.items if str(i.ad_id) == first["ad_id"])
    assert (item.display_s, item.regions, item.title) == (20, ["440304"], "Half-price tea")

    await client.post(f"{ADMIN}/{first['ad_id']}/withdraw", headers=operator)
    after = (await recorder.wait_for(playlist_with(second["ad_id"]))).data
    assert isinstance(after, AdPlaylistPublished) and after.version > both.version


async def test_cabinet_screen_impressions_are_the_plays_reported_counted_once_per_report(client, staff, bus, wait):
    """device.ad_plays.reported (a cabinet's `plays` report) counts as the screen ad's impressions: a report
    redelivered, or sent again by the cabinet under the same msg_id, counts once; ids of no screen ad are left out."""
    from contracts.events import AdPlayCount, AdPlaysReported

    operator = staff(roles=("operator",))
    screen = (await client.post(ADMIN, headers=operator, json=_ad(slot="cabinet_screen", link_url=None))).json()
    banner = (await client.post(ADMIN, headers=operator, json=_ad())).json()
    now = datetime.now(UTC)

    def report(cabinet: str, report_id: str, *items: tuple[str, int]) -> AdPlaysReported:
        return AdPlaysReported(
            cabinet_id=cabinet,
            report_id=report_id,
            playlist_version=1,
            period_start=now - timedelta(minutes=15),
            period_end=now,
            items=[AdPlayCount(ad_id=a, plays=n) for a, n in items],
            at=now,
        )

    first = report("CAB-0001", "m-1", (screen["ad_id"], 60), (banner["ad_id"], 5), ("not-a-uuid", 3))
    envelope = await bus.publish(first, key="CAB-0001")
    await bus.send(envelope)  # redelivered
    await bus.publish(report("CAB-0001", "m-1", (screen["ad_id"], 60)), key="CAB-0001")  # the cabinet sent it again
    await bus.publish(report("CAB-0002", "m-1", (screen["ad_id"], 12), (str(uuid.uuid4()), 1)), key="CAB-0002")
    await bus.publish(report("CAB-0001", "m-2", (screen["ad_id"], 30)), key="CAB-0001")

    async def counted() -> bool:
        counts = (await client.get(f"{ADMIN}/{screen['ad_id']}", headers=operator)).json()["counts"]
        return bool(counts["impressions"] == 102)

    await wait(counted, what="the screen plays to be counted")
    # m-2 came last on CAB-0001's partition and is counted: every copy of m-1 before it was handled.
    listed = (await client.get(ADMIN, headers=operator, params={"slot": "cabinet_screen"})).json()["items"]
    mine = next(a for a in listed if a["ad_id"] == screen["ad_id"])
    assert mine["counts"] == {"impressions": 102, "clicks": 0, "screens": 2}
    assert (await client.get(f"{ADMIN}/{banner['ad_id']}", headers=operator)).json()["counts"]["impressions"] == 0
