"""The scripted demo `make run` ends with: one user's whole journey through the public APIs.

Run against a running stack: `python tests/e2e/demo.py` (reads the *_SVC_URL variables, EMULATOR_CONTROL_URL,
ADMIN_BOOTSTRAP_LOGIN and ADMIN_BOOTSTRAP_PASSWORD)."""

import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from platform_client import PlatformClient, Timed, Urls, tiny_png, wait_for, yuan

from kit.httpclient import async_client

LOW_BATTERY_BANK = "PB-000002"


def step(title: str, detail: str = "", ms: float | None = None) -> None:
    timing = f"{ms:8.1f} ms" if ms is not None else " " * 11
    print(f"  {timing}  {title}" + (f"  — {detail}" if detail else ""), flush=True)


def fail(what: str, timed: Timed | None = None) -> None:
    body = timed.response.text if timed is not None else ""
    print(f"\nDEMO FAILED: {what} {body}", file=sys.stderr, flush=True)
    raise SystemExit(1)


async def main() -> None:
    urls = Urls.from_env()
    emulator = os.environ.get("EMULATOR_CONTROL_URL", "http://127.0.0.1:8010")
    async with async_client(timeout=10.0) as http:
        api = PlatformClient(urls, http)
        print("\nDemo: one user's journey through the public APIs\n", flush=True)

        for name, base in vars(urls).items():
            ready = await api.call("GET", f"{base}/readyz")
            if ready.status != 200:
                fail(f"{name} is not ready", ready)
        step("all six services ready", ", ".join(vars(urls)))

        phone = f"+86139{random.randint(0, 99_999_999):08d}"
        password = "demo-pass-1234"
        reg = await api.register(phone, password)
        if reg.status != 201:
            fail("register", reg)
        step("registered (SMS code, terms accepted)", f"{phone} → user {reg.json()['user_id']}", reg.ms)
        login = await api.login(phone, password)
        if login.status != 200:
            fail("login", login)
        step("logged in", "access token issued", login.ms)

        top = await api.top_up(5000, "alipay")
        if top.status not in (200, 201):
            fail("top up", top)
        top_up_id = top.json()["top_up_id"]
        start = time.perf_counter()

        async def paid() -> dict[str, Any] | None:
            status: dict[str, Any] = (await api.top_up_status(top_up_id)).json()
            return status if status.get("status") in ("succeeded", "failed") else None

        status, _ = await wait_for(paid, timeout_s=10)
        if status["status"] != "succeeded":
            fail(f"top up ended {status}")
        wallet = await api.wallet()
        step(
            "topped up ¥50.00 through the Alipay sandbox",
            f"signed async notification verified; balance {yuan(wallet['balance_fen'])}",
            (time.perf_counter() - start) * 1000 + top.ms,
        )

        # The emulator's cabinets (a benchmark may have left other, silent ones in the registry).
        emulated = {c["cabinet_id"] for c in (await http.get(f"{emulator}/cabinets")).json()["cabinets"]}
        cabinets = [c for c in await api.cabinets() if c["id"] in emulated]
        online = [c for c in cabinets if c.get("online")]
        if len(online) < 2:
            fail(f"expected two online cabinets, got {cabinets}")
        borrow_from = max(online, key=lambda c: c.get("banks_available", 0))
        return_to = max((c for c in online if c["id"] != borrow_from["id"]), key=lambda c: c.get("free_slots", 0))
        step(
            "map",
            "; ".join(f"{c['id']}: {c.get('banks_available', '?')} available" for c in cabinets),
        )

        refused = await api.borrow(LOW_BATTERY_BANK)
        step(
            f"scan {LOW_BATTERY_BANK} (battery low)",
            f"refused {refused.status} {refused.json().get('code')}: {refused.json().get('detail')}",
            refused.ms,
        )

        borrowed = await api.borrow(borrow_from["id"])
        if borrowed.status != 201:
            fail("borrow", borrowed)
        rental = borrowed.json()
        step(
            f"scan cabinet {borrow_from['id']}",
            f"bank {rental['bank_id']} ejected from slot {rental['slot']}, rental {rental['rental_id']} active",
            borrowed.ms,
        )

        await asyncio.sleep(1.0)
        returned_at = time.perf_counter()
        ret = await http.post(f"{emulator}/cabinets/{return_to['id']}/return", json={"bank_id": rental["bank_id"]})
        if ret.status_code != 200:
            fail(f"emulator return: {ret.status_code} {ret.text}")
        step(f"bank pushed into {return_to['id']}", f"device ack: {ret.json().get('ack')}")

        async def ended() -> dict[str, Any] | None:
            current = await api.rental(rental["rental_id"])
            return current if current["state"] in ("ended", "settled", "unpaid") else None

        closed, stop_ms = await wait_for(ended, timeout_s=30)
        step("billing stopped", f"fee {yuan(closed['fee_fen'])} at the device's return time", stop_ms)

        async def settled() -> dict[str, Any] | None:
            current = await api.rental(rental["rental_id"])
            return current if current["state"] in ("settled", "unpaid") else None

        final, _ = await wait_for(settled, timeout_s=30)
        wallet = await api.wallet()
        step(
            f"charge {final['state']}",
            f"balance {yuan(wallet['balance_fen'])}",
            (time.perf_counter() - returned_at) * 1000,
        )

        async def inbox() -> list[dict[str, Any]] | None:
            items = await api.messages()
            return items if any(m["category"] == "rental" for m in items) else None

        messages, _ = await wait_for(inbox, timeout_s=10)
        for message in reversed(messages):
            step(f"inbox: {message['title']}", message["body"])

        admin_login = os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin")
        admin_password = os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password")
        admin = await api.admin_login(admin_login, admin_password)

        await customer_service(api, admin, rental["bank_id"], return_to["id"], rental["rental_id"])
        await notice_with_image(api, admin)
        await campaign(api, admin)
        stats = await api.call("GET", f"{urls.analytics}/v1/stats/rentals-per-hour", token=admin)
        busy = [f"{b['hour']:02d}h: {b['rentals']}" for b in stats.json().get("buckets", []) if b["rentals"]]
        step("analytics: rentals per hour of day", ", ".join(busy) or "none yet", stats.ms)
        await show_analytics(api, urls, admin)
        await show_supervision(api, urls, admin)

        print("\nServices:")
        for name, base in vars(urls).items():
            print(f"  {name:<10} {base}   (docs {base}/docs, health {base}/readyz, metrics {base}/metrics)")
        print(f"  emulator   {emulator}   (control API: {emulator}/docs)\n", flush=True)


async def customer_service(api: PlatformClient, admin: str, bank_id: str, cabinet_id: str, rental_id: str) -> None:
    """The returned bank's cable is frayed: a report, the bank held, a ticket, a staff reply in the inbox."""
    urls = api.urls
    await api.call("PUT", f"{urls.notify}/v1/push-tokens", json={"platform": "ios", "token": "apns-demo-phone-0001"})
    report = await api.report(
        "damaged_cable",
        "The cable of this bank is frayed.",
        bank_id=bank_id,
        cabinet_id=cabinet_id,
        rental_id=rental_id,
    )
    if report.status != 201:
        fail("fault report", report)
    ticket = report.json()
    step(
        "report: damaged cable",
        f"ticket {ticket['ticket_id']} {ticket['status']}, priority {ticket['priority']}",
        report.ms,
    )

    async def held() -> bool:
        timed = await api.call("GET", f"{urls.device}/v1/cabinets/{cabinet_id}")
        return not any(s["bank_id"] == bank_id and s["rentable"] for s in timed.json()["slots"])

    _, held_ms = await wait_for(held, timeout_s=15)
    refused = await api.borrow(bank_id)
    step(
        f"scan {bank_id} (reported)",
        f"refused {refused.status} {refused.json().get('code')}: {refused.json().get('title')}",
        held_ms,
    )

    tickets = f"{urls.notify}/v1/admin/tickets"
    queue = await api.call("GET", tickets, token=admin, params={"status": "new", "bank_id": bank_id})
    step("staff queue", f"{len(queue.json()['items'])} new ticket(s) about {bank_id}", queue.ms)
    await api.call("POST", f"{tickets}/{ticket['ticket_id']}/assign", token=admin, json={"assignee": "support-1"})
    answer = f"Thank you! {bank_id} is out of service until a technician has replaced its cable."
    reply = await api.call("POST", f"{tickets}/{ticket['ticket_id']}/replies", token=admin, json={"text": answer})
    if reply.status != 201:
        fail("staff reply", reply)
    inbox = [m for m in await api.messages() if m["category"] == "service"]
    if not inbox:
        fail("the staff reply is not in the inbox")
    step(f"inbox: {inbox[0]['title']}", inbox[0]["body"], reply.ms)
    user_id = reply_user(await api.call("GET", f"{tickets}/{ticket['ticket_id']}", token=admin))

    async def pushed() -> dict[str, Any] | None:
        jobs = (await api.call("GET", f"{urls.notify}/v1/admin/users/{user_id}/pushes", token=admin)).json()["items"]
        job = next((j for j in jobs if j["message_id"] == inbox[0]["message_id"]), None)
        return job if job is not None and job["outcome"] else None

    job, push_ms = await wait_for(pushed, timeout_s=10)
    step("push to the phone (sandbox provider)", f"{job['outcome']}, per token {job['results']}", push_ms)

    async def task_opened() -> Timed | None:
        found = await api.call("GET", f"{urls.device}/v1/ops/tasks", token=admin, params={"device_id": bank_id})
        return found if found.status == 200 and found.json()["items"] else None

    listed, _ = await wait_for(task_opened, timeout_s=10)
    task = listed.json()["items"][0]
    await api.call("POST", f"{urls.device}/v1/ops/tasks/{task['id']}/start", token=admin, json={"note": "on my way"})
    done = await api.call(
        "POST", f"{urls.device}/v1/ops/tasks/{task['id']}/done", token=admin, json={"note": "cable replaced"}
    )
    step(f"maintenance task ({task['cause']})", f"{task['detail']}; {done.json().get('status')}", done.ms)

    cleared = await api.call(
        "POST",
        f"{urls.device}/v1/ops/banks/{bank_id}/fault-reports/clear",
        token=admin,
        json={"note": "cable replaced"},
    )
    if cleared.status != 200:
        fail("clear the fault report", cleared)
    resolved = await api.call("POST", f"{tickets}/{ticket['ticket_id']}/resolve", token=admin)
    step(
        "technician cleared the bank, ticket " + resolved.json()["status"],
        f"{bank_id}: fault reports cleared",
        cleared.ms,
    )


def reply_user(timed: Timed) -> str:
    user_id: str = timed.json()["user_id"]
    return user_id


async def notice_with_image(api: PlatformClient, admin: str) -> None:
    notices = f"{api.urls.notify}/v1/admin/notices"
    draft = await api.call(
        "POST",
        notices,
        token=admin,
        json={"kind": "operations", "title": "New cabinets downtown", "text": "Three new cabinets at the station."},
    )
    if draft.status != 201:
        fail("notice draft", draft)
    notice_id = draft.json()["notice_id"]
    image = tiny_png()
    upload = await api.call(
        "POST", f"{notices}/{notice_id}/images", token=admin, content=image, headers={"Content-Type": "image/png"}
    )
    if upload.status != 201:
        fail("notice image", upload)
    not_an_image = await api.call(
        "POST",
        f"{notices}/{notice_id}/images",
        token=admin,
        content=b"<svg/onload=alert(1)>",
        headers={"Content-Type": "image/png"},
    )
    published = await api.call("POST", f"{notices}/{notice_id}/publish", token=admin)
    if published.status != 200:
        fail("publish notice", published)
    step(
        "notice published with an image",
        f"{upload.json()['content_type']} {len(image)} B accepted; a fake PNG refused {not_an_image.status} "
        f"{not_an_image.json().get('code')}",
        published.ms,
    )
    item = next((m for m in await api.messages() if m["message_id"] == notice_id), None)
    if item is None or not item["images"]:
        fail("the notice is not in the inbox")
    assert item is not None
    fetched = await api.call("GET", f"{api.urls.notify}{item['images'][0]['url']}")
    step(
        f"inbox: {item['title']}",
        f"{item['body']} [image {fetched.response.headers.get('content-type')}, {len(fetched.response.content)} B "
        "through a signed URL that expires]",
        fetched.ms,
    )
    unread = await api.unread()
    step("unread messages", str(unread))


async def campaign(api: PlatformClient, admin: str) -> None:
    """The user consents to marketing in the inbox; a campaign to everyone goes out in batches."""
    notify = api.urls.notify
    await api.call("PUT", f"{notify}/v1/preferences", json={"marketing": {"inbox": True, "push": False, "sms": False}})
    body = {"title": "Weekend offer", "text": "Half price on Saturday.", "segment": {"all_users": True}}
    draft = await api.call("POST", f"{notify}/v1/admin/campaigns", token=admin, json=body | {"channels": ["inbox"]})
    if draft.status != 201:
        fail("campaign draft", draft)
    campaign_id = draft.json()["campaign_id"]
    await api.call("POST", f"{notify}/v1/admin/campaigns/{campaign_id}/schedule", token=admin, json={})

    async def sent() -> dict[str, Any] | None:
        one = (await api.call("GET", f"{notify}/v1/admin/campaigns/{campaign_id}", token=admin)).json()
        return one if one["status"] == "sent" else None

    done, ms = await wait_for(sent, timeout_s=15)
    stats = done["stats"]
    step(
        "campaign to all users (consent per channel, batched fan-out)",
        f"{stats['recipients']} recipient(s), {stats['inbox_delivered']} in the inbox, {stats['unreached']} without consent",
        ms,
    )


async def show_analytics(api: PlatformClient, urls: Urls, admin: str) -> None:
    banks = await api.call("GET", f"{urls.analytics}/v1/analytics/banks-per-region", token=admin)
    rows = [
        f"{r['name'] or 'unknown'} ({r['division_code'] or '-'}): {r['in_cabinets']} in cabinets, {r['rented']} rented, "
        f"{r['faulty']} faulty, {r['lost']} lost"
        for r in banks.json().get("rows", [])
    ]
    step("analytics: banks per region", "; ".join(rows) or "none yet", banks.ms)
    status = await api.call("GET", f"{urls.analytics}/v1/analytics/device-status", token=admin)
    online = [
        f"{r['name'] or 'unknown'}: {r['online']} of {r['devices']} {r['kind']}s online"
        for r in status.json().get("rows", [])
    ]
    step("analytics: device status", "; ".join(online) or "none yet", status.ms)

    async def active_today() -> Timed | None:
        answer = await api.call("GET", f"{urls.analytics}/v1/analytics/active-users", token=admin)
        return answer if answer.status == 200 and answer.json()["rows"] else None

    active, _ = await wait_for(active_today, timeout_s=10)
    today = active.json()["rows"][-1]
    step(
        "analytics: active users",
        f"{today['period_start']}: {today['active']} active ({today['new']} new, {today['returning']} returning)",
        active.ms,
    )


async def show_supervision(api: PlatformClient, urls: Urls, admin: str) -> None:
    """The regulator's view: a credential of its own, MDS 2.0 shapes, no personal data."""
    token = await api.regulator_token(admin)
    mds = {"Accept": "application/vnd.mds+json;version=2.0"}
    now = datetime.now(UTC)
    last_hour = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H")
    trips = await api.call(
        "GET", f"{urls.analytics}/v1/supervision/trips", token=token, headers=mds, params={"end_time": last_hour}
    )
    listed = trips.json().get("trips", []) if trips.status == 200 else []
    step(f"supervision: trips ending {last_hour}h UTC", f"{trips.status}, {len(listed)} trips", trips.ms)
    this_hour = now.strftime("%Y-%m-%dT%H")
    current = await api.call(
        "GET", f"{urls.analytics}/v1/supervision/trips", token=token, headers=mds, params={"end_time": this_hour}
    )
    step(f"supervision: trips ending {this_hour}h UTC", f"{current.status} (the hour is not complete)", current.ms)
    now_ms = int(now.timestamp() * 1000)
    recent = await api.call(
        "GET",
        f"{urls.analytics}/v1/supervision/events/recent",
        token=token,
        headers=mds,
        params={"start_time": now_ms - 3600_000, "end_time": now_ms + 1},
    )
    events = recent.json().get("events", [])
    shown = [f"{e['event_types'][0]} trip {e['trip_ids'][0][:8]}… ({e['vehicle_state']})" for e in events[-4:]]
    step("supervision: events of the last hour", "; ".join(shown) or "none", recent.ms)


if __name__ == "__main__":
    asyncio.run(main())
