"""Value-added services and ads across the running mesh (issue 10, 6.3.7): staff put an ad on the cabinet
screens of a region and it plays on the emulated cabinets there (notify-svc -> Kafka -> device-svc -> MQTT),
labelled as an advertisement, until it is withdrawn, and the cabinet's play report becomes the ad's impressions;
an app banner is counted once per viewer and day; a
user accepts a value-added service's risk notice and staff see the exact version accepted."""

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mesh import START_BALANCE_FEN, Mesh
from platform_client import PlatformClient, wait_for

from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e


async def test_cabinet_screen_ad_banner_counts_and_a_vas_consent(mesh: Mesh, user: PlatformClient) -> None:
    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    ads = f"{user.urls.notify}/v1/admin/ads"
    now = datetime.now(UTC)
    schedule = {
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
    }
    screen_ad = {
        "slot": "cabinet_screen",
        "advertiser": "Lucky Tea",
        "title": "Half-price tea at the station",
        "text": "Today only",
        "regions": ["440304"],  # Futian, where the seeded cabinets stand
        "display_s": 10,
        **schedule,
    }
    created = await user.call("POST", ads, token=admin, json=screen_ad)
    assert created.status == 201, created.response.text
    cabinet_id = next(c["id"] for c in await user.cabinets() if c["online"])
    cabinet: Cabinet = mesh.fleet[cabinet_id]

    async def playing() -> dict[str, Any] | None:
        shown: dict[str, Any] | None = cabinet.screen()["showing"]
        return shown if shown and shown["title"] == screen_ad["title"] else None

    shown, _ = await wait_for(playing, timeout_s=20)
    assert shown["label"] == "advertisement"

    # The cabinet reports what its screen played (MQTT `plays`, sent twice as after a lost ack): device-svc ->
    # device.ad_plays.reported -> notify-svc counts the plays as the ad's impressions, once.
    ad_id = created.json()["ad_id"]
    cabinet.count_plays(cabinet.device_now_ms() + 30_000)  # 30 s more of screen time on the cabinet's clock
    cabinet.set_faults(duplicate=2)
    report = await cabinet.report_plays()
    cabinet.set_faults(duplicate=1)
    assert report is not None
    played = next(i.plays for i in report.items if i.ad_id == ad_id)
    assert played >= 1

    async def screen_counts() -> dict[str, Any] | None:
        counts: dict[str, Any] = (await user.call("GET", f"{ads}/{ad_id}", token=admin)).json()["counts"]
        return counts if counts["impressions"] > 0 else None

    counted, _ = await wait_for(screen_counts, timeout_s=20)
    assert counted == {"impressions": played, "clicks": 0, "screens": 1}

    banner = {**screen_ad, "slot": "app_banner", "title": "Tea banner", "link_url": "https://tea.example.com/"}
    banner_id = (await user.call("POST", ads, token=admin, json=banner)).json()["ad_id"]
    listed = await user.call("GET", f"{user.urls.notify}/v1/ads", params={"region": "440304"})
    assert [(a["title"], a["label"]) for a in listed.json()["items"]] == [("Tea banner", "advertisement")]
    for expected in (True, False):
        seen = await user.call("POST", f"{user.urls.notify}/v1/ads/{banner_id}/impressions")
        assert seen.json()["counted"] is expected
    counts = (await user.call("GET", f"{ads}/{banner_id}", token=admin)).json()["counts"]
    assert counts == {"impressions": 1, "clicks": 0, "screens": None}

    withdrawn = await user.call("POST", f"{ads}/{created.json()['ad_id']}/withdraw", token=admin)
    assert withdrawn.status == 200, withdrawn.response.text

    async def screen_cleared() -> bool:
        return not cabinet.screen()["on_air"]

    await wait_for(screen_cleared, timeout_s=20)

    vas = f"{user.urls.notify}/v1/admin/value-added-services"
    offer = {
        "code": "e2e_damage_cover",
        "name": "Damage cover",
        "description": "No charge if the bank breaks during your rental",
        "kind": "add_on",
        "provider": "PICC Property and Casualty",
        "price_fen": 100,
    }
    assert (await user.call("POST", vas, token=admin, json=offer)).status == 201
    notice = await user.call(
        "POST", f"{vas}/e2e_damage_cover/risk-notices", token=admin, json={"text": "Cover ends after 24 hours."}
    )
    version = notice.json()["version"]
    services = (await user.call("GET", f"{user.urls.notify}/v1/value-added-services")).json()["items"]
    shown_offer = next(s for s in services if s["code"] == "e2e_damage_cover")
    assert (shown_offer["risk_notice"]["version"], shown_offer["provider"]) == (version, offer["provider"])
    accepted = await user.call(
        "POST",
        f"{user.urls.notify}/v1/value-added-services/e2e_damage_cover/consents",
        json={"version": version},
    )
    assert accepted.status == 201, accepted.response.text

    # The money path charges the priced acceptance once, from the balance (asset-credit's vas_fee entry), and the
    # offer shows it paid.
    async def paid() -> bool:
        items = (await user.call("GET", f"{user.urls.notify}/v1/value-added-services")).json()["items"]
        return bool(next(s for s in items if s["code"] == "e2e_damage_cover")["payment"] == "paid")

    await wait_for(paid, timeout_s=20)
    fees = [e for e in await user.wallet_entries() if e["kind"] == "vas_fee"]
    assert [e["amount_fen"] for e in fees] == [-100]
    assert (await user.wallet())["balance_fen"] == START_BALANCE_FEN - 100  # a fresh user: nothing else spent
    records = (await user.call("GET", f"{vas}/e2e_damage_cover/consents", token=admin)).json()["items"]
    assert [(r["action"], r["version"]) for r in records] == [("accepted", version)]
