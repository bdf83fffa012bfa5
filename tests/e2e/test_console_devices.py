"""The console's device and task pages over plain HTTP: assigning a task from the staff picker, ejecting
a bank for maintenance (the emulated cabinet releases it); checked against device-svc's API."""

import re
import uuid
from collections.abc import Callable

import pytest
from console_http import (
    ADMIN,
    Browserless,
    text,
)
from mesh import Mesh
from platform_client import wait_for

pytestmark = pytest.mark.e2e


async def test_a_dispatcher_picks_the_assignee_from_the_staff(mesh: Mesh, console: Callable[[], Browserless]) -> None:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    login = f"tech{uuid.uuid4().hex[:6]}"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=token,
        json={
            "login": login,
            "password": "technician-password-1",
            "role": "field_maintenance",
            "must_change_password": False,
        },
    )
    assert created.status == 201, created.response.text
    technician_id = created.json()["admin_id"]
    bank_id = f"PB-PCK{uuid.uuid4().hex[:6].upper()}"
    assert (
        await api.call("POST", f"{api.urls.device}/v1/admin/banks", token=token, json={"id": bank_id})
    ).status == 201
    faulty = await api.call(
        "POST",
        f"{api.urls.device}/v1/ops/banks/{bank_id}/state",
        token=token,
        json={"state": "faulty", "reason": "swollen cell (e2e)"},
    )
    assert faulty.status == 200, faulty.response.text
    assert (await api.call("POST", f"{api.urls.device}/v1/ops/tasks/scan", token=token)).status == 200
    [task] = (
        await api.call("GET", f"{api.urls.device}/v1/ops/tasks", token=token, params={"device_id": bank_id})
    ).json()["items"]

    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/tasks/{task['id']}")
    picker = re.search(r'<select id="task-assignee" name="assignee">(.*?)</select>', page, re.S)
    assert picker and f'value="{technician_id}"' in picker.group(1)
    assigned = await admin.post(f"/tasks/{task['id']}/assign", {"assignee": technician_id, "note": "yours"})
    assert assigned.status_code == 303, assigned.text
    assert text(await admin.page(f"/tasks/{task['id']}"), "task-assignee") == login
    detail = (await api.call("GET", f"{api.urls.device}/v1/ops/tasks/{task['id']}", token=token)).json()
    assert detail["assignee"] == technician_id and detail["status"] == "assigned"


async def test_a_bank_ejected_for_maintenance_leaves_the_emulated_cabinet_audited(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    cabinet_id = sorted(mesh.fleet.cabinets)[-1]
    cabinet = (await api.call("GET", f"{api.urls.device}/v1/cabinets/{cabinet_id}", token=token)).json()
    bank_id = next(s["bank_id"] for s in reversed(cabinet["slots"]) if s["bank_id"] and s["rentable"])
    emulated = mesh.fleet[cabinet_id]
    slot = emulated.slot_of(bank_id)

    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/banks/{bank_id}")
    assert 'data-action="eject"' in page and 'for="eject-reason"' in page
    # Sent from the bank's slot on its cabinet's page, which the answer goes back to.
    page = await admin.page(f"/cabinets/{cabinet_id}")
    row = re.search(
        rf'<form method="post" action="/banks/{bank_id}/eject"[^>]*data-slot-eject="{slot}"(.*?)</form>', page, re.S
    )
    assert row and f'for="eject-reason-{slot}"' in row.group(1)
    form = {"reason": "cracked case <b>", "cabinet_id": cabinet_id}
    sent = await admin.post(f"/banks/{bank_id}/eject", form)
    assert (sent.status_code, sent.headers["location"]) == (303, f"/cabinets/{cabinet_id}?done=bank.eject_sent")

    async def out_of_the_cabinet() -> bool:
        return emulated.slot_of(bank_id) is None

    await wait_for(out_of_the_cabinet, timeout_s=10)
    try:

        async def held() -> str | None:
            page = await admin.page(f"/banks/{bank_id}")
            return page if text(page, "state") == "maintenance" else None

        page, _ = await wait_for(held, timeout_s=10, interval_s=0.2)
        assert "cracked case &lt;b&gt;" in page  # the reason in its transitions, escaped

        async def audited() -> str | None:
            page = await admin.page(f"/audit?action=bank.eject_for_maintenance&target_id={bank_id}")
            return page if f"<td>bank {bank_id}</td>" in page else None

        page, _ = await wait_for(audited, timeout_s=15, interval_s=0.3)
        assert "cracked case &lt;b&gt;" in page
        # device-svc's refusal is shown on the form's page, in the staff member's language, not as a 502.
        again = await admin.post(f"/banks/{bank_id}/eject", {"reason": "again"})
        assert (again.status_code, again.headers["location"]) == (303, f"/banks/{bank_id}")
        shown = await admin.page(f"/banks/{bank_id}")
        assert text(shown, "problem") == "充电宝不在机柜中 (bank_not_in_cabinet)"
        assert 'data-figure="problem"' not in await admin.page(f"/banks/{bank_id}")  # shown once
    finally:  # back in its slot and in service, for the other tests
        await emulated.wait_ack(await emulated.return_bank(bank_id, slot=slot), timeout_s=5)
        back = await api.call(
            "POST",
            f"{api.urls.device}/v1/ops/banks/{bank_id}/state",
            token=token,
            json={"state": "in_cabinet", "reason": "serviced"},
        )
        assert back.status == 200, back.response.text


async def test_the_bank_list_searches_and_pages_the_whole_fleet_in_device_svc(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    """101 banks under one prefix: device-svc finds them, the console shows 100 and a next page with the last."""
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    prefix = f"PB-PG{uuid.uuid4().hex[:5].upper()}"
    ids = [f"{prefix}{n:03d}" for n in range(101)]
    imported = await api.call(
        "POST", f"{api.urls.device}/v1/admin/banks/import", token=token, json={"items": [{"id": i} for i in ids]}
    )
    assert imported.status in (200, 201), imported.response.text

    admin = console()
    await admin.sign_in(*ADMIN)
    first = await admin.page(f"/banks?q={prefix}")
    assert re.findall(r'<tr data-bank="([^"]+)"', first) == ids[:100]
    more = re.search(r'<a href="/banks\?([^"]+)" rel="next"', first)
    assert more, "no next page"
    second = await admin.page(f"/banks?{more.group(1).replace('&amp;', '&')}")
    assert re.findall(r'<tr data-bank="([^"]+)"', second) == ids[100:]
    assert 'rel="next"' not in second
    page = await admin.page(f"/banks/{ids[100]}")  # one bank, wherever it is in the fleet
    assert text(page, "state") == "maintenance"
    await admin.page("/banks/PB-NOSUCHBANK", status=404)
