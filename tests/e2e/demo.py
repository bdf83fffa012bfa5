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

import httpx
from platform_client import PlatformClient, Timed, Urls, wait_for, yuan

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
    async with httpx.AsyncClient(timeout=10.0) as http:
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
        stats = await api.call("GET", f"{urls.analytics}/v1/stats/rentals-per-hour", token=admin)
        busy = [f"{b['hour']:02d}h: {b['rentals']}" for b in stats.json().get("buckets", []) if b["rentals"]]
        step("analytics: rentals per hour of day", ", ".join(busy) or "none yet", stats.ms)
        await show_analytics(api, urls, admin)
        await show_supervision(api, urls, admin)

        print("\nServices:")
        for name, base in vars(urls).items():
            print(f"  {name:<10} {base}   (docs {base}/docs, health {base}/readyz, metrics {base}/metrics)")
        print(f"  emulator   {emulator}   (control API: {emulator}/docs)\n", flush=True)


async def show_analytics(api: PlatformClient, urls: Urls, admin: str) -> None:
    banks = await api.call("GET", f"{urls.analytics}/v1/analytics/banks-per-region", token=admin)
    rows = [
        f"{r['name'] or 'unknown'} ({r['division_code'] or '-'}): {r['in_cabinets']} in cabinets, {r['rented']} rented, "
        f"{r['faulty']} faulty, {r['lost']} lost"
        for r in banks.json().get("rows", [])
    ]
    step("analytics: banks per region", "; ".join(rows) or "none yet", banks.ms)

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
