"""Partner webhooks (issue 11) against a real local HTTP receiver that answers 500, times out, then 200:
filtered subscriptions, HMAC-signed payloads with a timestamp, exponential back-off, the dead-letter list,
manual replay and the delivery log. The delivery pass is driven with explicit times (no sleeping through
back-offs); the HTTP is real."""

import asyncio
import contextlib
import ipaddress
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from analytics_svc.models import WebhookAttempt, WebhookDelivery
from analytics_svc.settings import Settings
from analytics_svc.webhooks.egress import IPAddress, WebhookUrlRefused, check
from analytics_svc.webhooks.service import Policy, deliver_due, subscribe
from analytics_svc.webhooks.signing import verify
from contracts import event_adapter
from contracts.events import DeviceAlarmKind, DeviceAlarmRaised
from kit.db import make_sessionmaker, unit_of_work
from kit.testing import eventually, staff_actions

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """Answers each path from its script (`500`, `timeout`, `200`; the last entry repeats)."""

    port: int = 0
    scripts: dict[str, list[str]] = field(default_factory=dict)
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.received.append((name, dict(request.headers), await request.body()))
        script = self.scripts.setdefault(name, ["200"])
        action = script.pop(0) if len(script) > 1 else script[0]
        if action == "timeout":
            await asyncio.sleep(2)  # deliberate: a receiver slower than the sender's timeout, not a wait
            return Response(status_code=200)
        return Response(status_code=int(action))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        found.port = s.getsockname()[1]
    app = Starlette(routes=[Route("/{name}", found.handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=found.port, log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await eventually(started, timeout=10, what="the receiver listening")
    yield found
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


async def test_signed_deliveries_back_off_dead_letter_and_replay(client, bus, admin, db, receiver) -> None:
    staff = admin("operator")
    receiver.scripts = {"a": ["500", "timeout", "200"], "b": ["500"]}
    subs: dict[str, Any] = {}
    for name, types in (
        ("a", ["device.alarm.raised"]),
        ("b", ["device.alarm.raised"]),
        ("c", ["analytics.hotspot.raised"]),
    ):
        body = {"partner": f"partner-{name}", "url": receiver.url(name), "event_types": types}
        created = await client.post("/v1/admin/webhooks", json=body, headers=staff)
        assert created.status_code == 201, created.text
        subs[name] = created.json()
    assert subs["a"]["secret"].startswith("whsec_")
    listed = (await client.get("/v1/admin/webhooks", headers=staff)).json()["items"]
    assert len(listed) == 3 and all("secret" not in s for s in listed)
    refused = await client.post(
        "/v1/admin/webhooks",
        json={"partner": "p", "url": receiver.url("x"), "event_types": ["billing.rental.started"]},
        headers=staff,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "unknown_event_type")  # carries user ids
    assert (await client.get("/v1/admin/webhooks", headers=admin("analyst"))).status_code == 403

    alarm = DeviceAlarmRaised(
        device_id="PB-W1", kind=DeviceAlarmKind.HIGH_TEMPERATURE, at=datetime.now(UTC), detail="65 °C"
    )
    envelope = await bus.publish(alarm, "PB-W1")
    await bus.send(envelope)  # a copy: still one delivery per subscription

    async def deliveries(name: str) -> list[dict[str, Any]]:
        url = f"/v1/admin/webhooks/{subs[name]['id']}/deliveries"
        return list((await client.get(url, headers=staff)).json()["items"])

    async def both_delivered() -> bool:
        return bool(await deliveries("a") and await deliveries("b"))

    await eventually(both_delivered, timeout=10, interval=0.05, what="deliveries to a and b")
    assert len(await deliveries("a")) == len(await deliveries("b")) == 1
    assert await deliveries("c") == []  # filtered out

    sessionmaker = make_sessionmaker(db)
    policy = Policy(timeout_s=0.3, max_attempts=3, backoff_s=1.0, allow_loopback=True)
    t0 = datetime.now(UTC)
    async with httpx.AsyncClient() as http:

        async def run(at: datetime) -> int:
            return await deliver_due(sessionmaker, http, policy, at)

        assert await run(t0) == 2  # a: 500, b: 500
        assert await run(t0 + timedelta(seconds=0.5)) == 0  # backing off 1 s
        assert await run(t0 + timedelta(seconds=1.1)) == 2  # a: timeout, b: 500
        assert await run(t0 + timedelta(seconds=2.5)) == 0  # backing off 2 s now
        assert await run(t0 + timedelta(seconds=3.2)) == 2  # a: 200, b: 500, its third: dead
        assert await run(t0 + timedelta(hours=1)) == 0

        [a] = await deliveries("a")
        assert (a["status"], a["attempts"], a["event_id"]) == ("delivered", 3, str(envelope.event_id))
        log = (await client.get(f"/v1/admin/webhooks/deliveries/{a['id']}", headers=staff)).json()["log"]
        assert [(x["status_code"], x["error"]) for x in log] == [(500, None), (None, "timeout"), (200, None)]
        dead = (await client.get("/v1/admin/webhooks/dead-letters", headers=staff)).json()["items"]
        [b] = dead
        assert (b["subscription_id"], b["status"], b["attempts"], b["last_error"]) == (
            subs["b"]["id"],
            "dead",
            3,
            "HTTP 500",
        )

        # Every request was signed with its subscription's secret and a timestamp, over the exact body.
        for name, headers, body in receiver.received:
            assert verify(subs[name]["secret"], headers["x-pb-signature"], body, now=int(time.time()), tolerance_s=3600)
            assert not verify(subs["c"]["secret"], headers["x-pb-signature"], body, now=int(time.time()))
            assert event_adapter.validate_json(body).event_id == envelope.event_id
            assert headers["x-pb-event-type"] == "device.alarm.raised"
        assert [n for n, _, _ in receiver.received].count("a") == 3
        _, headers, body = receiver.received[0]
        assert not verify(subs["a"]["secret"], headers["x-pb-signature"], body + b" ", now=int(time.time()))

        # The partner is back: replay the dead letter by hand.
        receiver.scripts["b"] = ["200"]
        replayed = await client.post(f"/v1/admin/webhooks/deliveries/{b['id']}/replay", headers=staff)
        assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
        assert await run(datetime.now(UTC) + timedelta(seconds=1)) == 1
        [b] = await deliveries("b")
        assert (b["status"], b["attempts"]) == ("delivered", 1)
        assert (await client.get("/v1/admin/webhooks/dead-letters", headers=staff)).json()["items"] == []

    assert (await client.delete(f"/v1/admin/webhooks/{subs['a']['id']}", headers=staff)).status_code == 204
    missing = await client.post(f"/v1/admin/webhooks/deliveries/{uuid.uuid4()}/replay", headers=staff)
    assert (missing.status_code, missing.json()["code"]) == (404, "webhook_delivery_not_found")


async def _alarm(bus, device_id: str) -> None:
    alarm = DeviceAlarmRaised(
        device_id=device_id, kind=DeviceAlarmKind.HIGH_TEMPERATURE, at=datetime.now(UTC), detail="65 °C"
    )
    await bus.publish(alarm, device_id)


async def _pending(db: AsyncEngine, count: int) -> None:
    """Wait until the webhook consumer has turned the events into `count` deliveries."""

    async def enqueued() -> bool:
        async with db.connect() as conn:
            return bool((await conn.scalar(text("SELECT count(*) FROM webhook_deliveries"))) == count)

    await eventually(enqueued, timeout=15, interval=0.05, what=f"{count} webhook deliveries")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "private"),
        ("https://192.168.0.10:8443/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
        ("http://[fd00:ec2::254]/", "private"),  # AWS metadata over IPv6
        ("http://100.100.100.200/latest/meta-data", "private"),  # Alibaba Cloud metadata (shared 100.64/10)
        ("http://[::ffff:10.0.0.1]/", "private"),  # an IPv4 address mapped into IPv6
        ("http://0.0.0.0/", "reserved"),
        ("http://partner.invalid/hook", "unresolvable"),  # .invalid never resolves (RFC 6761)
    ],
)
async def test_partner_urls_that_resolve_to_inner_addresses_are_refused(client, admin, url, reason) -> None:
    staff = admin("operator")
    body = {"partner": "p", "url": url, "event_types": ["device.alarm.raised"]}
    refused = await client.post("/v1/admin/webhooks", json=body, headers=staff)
    assert (refused.status_code, refused.json()["code"], refused.json()["reason"]) == (
        422,
        "webhook_url_refused",
        reason,
    )
    assert (await client.get("/v1/admin/webhooks", headers=staff)).json()["items"] == []


async def test_loopback_is_refused_unless_allowed_and_checked_again_at_delivery(
    client, bus, admin, db, receiver
) -> None:
    # Outside local and test stacks loopback is refused at registration, by name as by address (real DNS).
    for url in (receiver.url("x"), f"http://localhost:{receiver.port}/x", f"http://[::1]:{receiver.port}/x"):
        with pytest.raises(WebhookUrlRefused) as refused:
            await check(url, allow_loopback=False)
        assert refused.value.extra["reason"] == "loopback"
    with pytest.raises(ValidationError, match="WEBHOOK_ALLOW_LOOPBACK"):
        Settings(
            pb_env="production",
            webhook_allow_loopback=True,
            jwt_public_key_file="/dev/null",
            supervision_id_key="a-real-production-key",
        )

    # Registered while allowed (as a name), then sent where loopback is not: the delivery resolves the name
    # again, refuses it, sends nothing and logs why; the pass that allows it delivers.
    staff = admin("operator")
    url = f"http://localhost:{receiver.port}/back"
    body = {"partner": "p", "url": url, "event_types": ["device.alarm.raised"]}
    assert (await client.post("/v1/admin/webhooks", json=body, headers=staff)).status_code == 201
    await _alarm(bus, "PB-W2")
    await _pending(db, 1)
    sessionmaker = make_sessionmaker(db)
    t0 = datetime.now(UTC)
    async with httpx.AsyncClient() as http:
        assert await deliver_due(sessionmaker, http, Policy(allow_loopback=False, backoff_s=1.0), t0) == 1
        assert receiver.received == []
        dead = (await client.get("/v1/admin/webhooks/dead-letters", headers=staff)).json()["items"]
        assert dead == []  # refused is a failed attempt: retried with back-off
        later = t0 + timedelta(seconds=1.1)
        assert await deliver_due(sessionmaker, http, Policy(allow_loopback=True), later) == 1
    [(name, headers, _)] = receiver.received
    assert (name, headers["host"]) == ("back", f"localhost:{receiver.port}")
    async with sessionmaker() as session:
        [delivery] = (await session.execute(select(WebhookDelivery))).scalars().all()
        errors = [
            a.error for a in (await session.execute(select(WebhookAttempt).order_by(WebhookAttempt.id))).scalars()
        ]
    assert delivery.status == "delivered"
    assert errors[0] is not None and errors[0].startswith("refused: localhost resolves to a loopback address")
    assert errors[1] is None


async def test_a_delivery_connects_to_the_address_it_checked(client, bus, db, receiver) -> None:
    """The name is resolved once per delivery and the request goes to that address, with the name in Host:
    `partner.test` exists only in this test's resolver, so a second lookup by the HTTP client would fail."""

    async def partner_dns(host: str, port: int) -> list[IPAddress]:
        assert host == "partner.test"
        return [ipaddress.ip_address("127.0.0.1")]

    sessionmaker = make_sessionmaker(db)
    async with unit_of_work(sessionmaker) as session:
        await subscribe(
            session,
            partner="p",
            url=f"http://partner.test:{receiver.port}/pinned",
            event_types=["device.alarm.raised"],
            by="test",
            allow_loopback=True,
            resolver=partner_dns,
        )
    await _alarm(bus, "PB-W3")
    await _pending(db, 1)
    async with httpx.AsyncClient() as http:
        sent = await deliver_due(sessionmaker, http, Policy(allow_loopback=True), datetime.now(UTC), partner_dns)
    assert sent == 1
    [(name, headers, _)] = receiver.received
    assert (name, headers["host"]) == ("pinned", f"partner.test:{receiver.port}")


async def test_each_partner_is_held_to_its_rate_limit(client, bus, admin, db, receiver) -> None:
    staff = admin("operator")
    for partner, path in (("slow", "s1"), ("slow", "s2"), ("fast", "f1")):
        body = {"partner": partner, "url": receiver.url(path), "event_types": ["device.alarm.raised"]}
        assert (await client.post("/v1/admin/webhooks", json=body, headers=staff)).status_code == 201
    # 120 a minute: two a second, at most one second's worth at once; shared by both its subscriptions.
    limited = await client.put("/v1/admin/webhooks/partners/slow", json={"per_minute": 120}, headers=staff)
    assert limited.status_code == 204
    [audited] = await staff_actions(db, "webhook_partner.set_limit")  # kit.audit, issue 15
    assert (audited.target_type, audited.target_id) == ("webhook_partner", "slow")
    assert (audited.before, audited.after["per_minute"]) == ({}, 120)  # a new row: nothing before
    assert (
        await client.put("/v1/admin/webhooks/partners/slow", json={"per_minute": 0}, headers=staff)
    ).status_code == 422
    for n in range(3):
        await _alarm(bus, f"PB-R{n}")
    await _pending(db, 9)  # slow: 6 (two subscriptions), fast: 3

    sessionmaker = make_sessionmaker(db)
    t0 = datetime.now(UTC)
    async with httpx.AsyncClient() as http:

        async def run(after_s: float) -> int:
            return await deliver_due(sessionmaker, http, Policy(allow_loopback=True), t0 + timedelta(seconds=after_s))

        assert await run(0) == 2 + 3  # slow: its burst of 2; fast (default 600/min): all 3
        assert await run(0) == 0  # slow's budget is spent
        assert await run(0.5) == 1
        assert await run(1.5) == 2
        assert await run(1.6) == 0
        assert await run(10) == 1  # a long pause refills at most one second's worth: the last one
    assert sorted(n for n, _, _ in receiver.received) == ["f1"] * 3 + ["s1"] * 3 + ["s2"] * 3

    listed = (await client.get("/v1/admin/webhooks/partners", headers=staff)).json()
    assert listed["default_per_minute"] == 600
    assert [(p["partner"], p["per_minute"], p["default"]) for p in listed["items"]] == [
        ("fast", 600, True),
        ("slow", 120, False),
    ]
    await client.put("/v1/admin/webhooks/partners/slow", json={"per_minute": None}, headers=staff)
    listed = (await client.get("/v1/admin/webhooks/partners", headers=staff)).json()
    assert [(p["partner"], p["per_minute"]) for p in listed["items"]] == [("fast", 600), ("slow", 600)]
    assert (await client.get("/v1/admin/webhooks/partners", headers=admin("analyst"))).status_code == 403
