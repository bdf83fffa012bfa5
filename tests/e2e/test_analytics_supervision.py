"""A rental across the running mesh shows up in the operator analyses and, de-identified, in the
regulator's MDS feed: public APIs only (an operator's token, a regulator's client credentials)."""

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from mesh import Mesh
from platform_client import PlatformClient, wait_for

from contracts.regions import region_at
from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e

MDS = {"Accept": "application/vnd.mds+json;version=2.0"}


async def test_a_rental_reaches_the_analyses_and_the_supervision_feed(mesh: Mesh, user: PlatformClient) -> None:
    me = (await user.call("GET", f"{mesh.urls.user}/v1/users/me", token=user.token)).json()
    cabinets = [c for c in await user.cabinets() if c["online"]]
    source = max(cabinets, key=lambda c: c["banks_available"])
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)
    target = max((c for c in cabinets if c["id"] != source["id"]), key=lambda c: c["free_slots"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    ack = await cabinet.wait_ack(await cabinet.return_bank(rental["bank_id"]), timeout_s=5)
    assert ack is not None and ack.result == "ok"

    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    division = region_at(source["lat"], source["lon"]).division_code
    assert division is not None

    async def counted() -> dict[str, Any] | None:
        answer = await user.call(
            "GET", f"{mesh.urls.analytics}/v1/analytics/regions", token=admin, params={"region": division}
        )
        rows = answer.json()["rows"] if answer.status == 200 else []
        return rows[0] if rows and rows[0]["rentals"] >= 1 else None

    row, _ = await wait_for(counted, timeout_s=20)
    assert row["division_code"] == division

    regulator = await user.regulator_token(admin)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)

    async def trip_events() -> list[dict[str, Any]] | None:
        answer = await user.call(
            "GET",
            f"{mesh.urls.analytics}/v1/supervision/events/recent",
            token=regulator,
            headers=MDS,
            params={"start_time": now_ms - 600_000, "end_time": now_ms + 600_000},
        )
        assert answer.status == 200, answer.response.text
        assert rental["rental_id"] not in answer.response.text and me["user_id"] not in answer.response.text
        assert me["phone"].removeprefix("+86") not in answer.response.text
        ended = [e for e in answer.json()["events"] if e["event_types"] == ["trip_end"]]
        return answer.json()["events"] if ended else None

    events, _ = await wait_for(trip_events, timeout_s=20)
    assert {e["event_types"][0] for e in events} >= {"trip_start", "trip_end"}
    # the regulator's token opens nothing else
    refused = await user.call("GET", f"{mesh.urls.analytics}/v1/analytics/regions", token=regulator)
    assert refused.status == 403
