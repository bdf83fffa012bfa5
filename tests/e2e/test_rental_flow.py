"""The product's central flow across the running mesh, through public APIs and emulated cabinets."""

import asyncio
import os
import time
import uuid
from typing import Any

import aiomqtt
import pytest
from mesh import Mesh, new_user
from platform_client import PlatformClient, wait_for

from contracts.mqtt import ReturnReport, UpChannel, up_topic
from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e

UNLOCK_BUDGET_MS = 5000
LOW_BATTERY_BANK = "PB-000002"


async def _cabinet_with_bank(api: PlatformClient, exclude: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    cabinets = [c for c in await api.cabinets() if c["online"] and c["id"] not in exclude]
    return max(cabinets, key=lambda c: c["banks_available"])


async def _cabinet_with_free_slot(api: PlatformClient, exclude: str) -> dict[str, Any]:
    cabinets = [c for c in await api.cabinets() if c["online"] and c["id"] != exclude]
    return max(cabinets, key=lambda c: c["free_slots"])


async def _rental_in(api: PlatformClient, rental_id: str, states: set[str], timeout_s: float = 30) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        rental = await api.rental(rental_id)
        return rental if rental["state"] in states else None

    rental, _ = await wait_for(probe, timeout_s=timeout_s)
    return rental


async def test_borrow_return_charge_and_message(mesh: Mesh, user: PlatformClient) -> None:
    start_balance = (await user.wallet())["balance_fen"]
    source = await _cabinet_with_bank(user)
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    assert borrowed.ms < UNLOCK_BUDGET_MS
    rental = borrowed.json()
    assert rental["state"] == "active"
    assert rental["cabinet_id"] == source["id"]
    where = mesh.fleet.find_bank(rental["bank_id"])
    assert where is not None
    assert where.state == "out"

    await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
    target = await _cabinet_with_free_slot(user, exclude=source["id"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    msg_id = await cabinet.return_bank(rental["bank_id"])
    ack = await cabinet.wait_ack(msg_id, timeout_s=5)
    assert ack is not None
    assert ack.result == "ok"

    ended = await _rental_in(user, rental["rental_id"], {"ended", "settled"}, timeout_s=30)
    assert ended["fee_fen"] == 150  # one started 30-minute period at the default price
    settled = await _rental_in(user, rental["rental_id"], {"settled"})
    assert settled["fee_fen"] == 150
    assert settled["bank_model"] == "PB-5000"  # history: bank, model, start, duration, fee
    assert settled["duration_seconds"] >= 1 and settled["started_at"] and settled["ended_at"]
    assert (await user.wallet())["balance_fen"] == start_balance - 150
    charges = [e for e in await user.wallet_entries() if e["kind"] == "charge"]
    assert [c["amount_fen"] for c in charges] == [-150]

    async def rental_message() -> list[dict[str, Any]] | None:
        items = [m for m in await user.messages() if m["category"] == "rental"]
        return items or None

    messages, _ = await wait_for(rental_message, timeout_s=10)
    assert messages[0]["title"] == "Rental ended"
    assert "¥1.50" in messages[0]["body"]
    assert rental["bank_id"] in messages[0]["body"]


async def test_low_battery_bank_is_refused_with_its_reason(mesh: Mesh, user: PlatformClient) -> None:
    refused = await user.borrow(LOW_BATTERY_BANK)
    assert refused.status == 409, refused.response.text
    assert refused.ms < UNLOCK_BUDGET_MS
    body = refused.json()
    assert body["code"] == "bank_battery_low"
    assert "rental_id" in body
    location = mesh.fleet.find_bank(LOW_BATTERY_BANK)
    assert location is not None
    assert location.state == "in_slot"


async def test_offline_cabinet_and_silent_cabinet_answer_within_budget(mesh: Mesh) -> None:
    api = await new_user(mesh)
    cabinet_info = await _cabinet_with_bank(api)
    cabinet: Cabinet = mesh.fleet[cabinet_info["id"]]
    await cabinet.go_offline()
    try:

        async def offline() -> bool:
            return not next(c for c in await api.cabinets() if c["id"] == cabinet.cabinet_id)["online"]

        await wait_for(offline, timeout_s=10)
        refused = await api.borrow(cabinet.cabinet_id)
        assert refused.status == 503, refused.response.text
        assert refused.json()["code"] == "cabinet_offline"
        assert refused.ms < UNLOCK_BUDGET_MS
    finally:
        assert await cabinet.go_online()

    async def online() -> bool:
        return bool(next(c for c in await api.cabinets() if c["id"] == cabinet.cabinet_id)["online"])

    await wait_for(online, timeout_s=10)
    cabinet.set_faults(silent=True)
    try:
        started = time.perf_counter()
        unanswered = await api.borrow(cabinet.cabinet_id)
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert unanswered.status == 504, unanswered.response.text
        assert unanswered.json()["code"] == "device_no_answer"
        assert elapsed_ms < UNLOCK_BUDGET_MS
    finally:
        cabinet.set_faults(silent=False)
    # Nothing was ejected and the user can borrow again once the device answers.
    retry = await api.borrow(cabinet.cabinet_id)
    assert retry.status == 201, retry.response.text


async def test_a_return_reported_twice_charges_once(mesh: Mesh, user: PlatformClient) -> None:
    start_balance = (await user.wallet())["balance_fen"]
    source = await _cabinet_with_bank(user)
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)
    target = await _cabinet_with_free_slot(user, exclude=source["id"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    # The same report redelivered (same msg_id), then a second report of the same return (new msg_id).
    first = await cabinet.return_bank(rental["bank_id"], repeat=2)
    assert await cabinet.wait_ack(first, timeout_s=5) is not None
    slot = cabinet.slot_of(rental["bank_id"])
    assert slot is not None
    second = ReturnReport(
        msg_id=f"again-{uuid.uuid4().hex[:8]}", ts=cabinet.device_now_ms(), slot=slot, bank_id=rental["bank_id"]
    )
    async with aiomqtt.Client(
        cabinet.host,
        cabinet.port,
        tls_context=cabinet.tls,
        identifier=f"{cabinet.cabinet_id}-again",
        username=cabinet.cabinet_id,
        password=cabinet.password,
    ) as again:
        await again.publish(up_topic(cabinet.cabinet_id, UpChannel.RETURN), second.model_dump_json(), qos=1)
    await _rental_in(user, rental["rental_id"], {"settled"})
    await asyncio.sleep(1.0)  # room for any second charge to show up
    assert (await user.wallet())["balance_fen"] == start_balance - 150
    charges = [e for e in await user.wallet_entries() if e["kind"] == "charge"]
    assert len(charges) == 1


def _rejections(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("pb_device_messages_rejected_total{"):
            labels, value = line.rsplit(" ", 1)
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0.0) + float(value)
    return counts


async def test_bad_device_messages_are_rejected_counted_and_service_keeps_serving(mesh: Mesh) -> None:
    api = await new_user(mesh)
    metrics_url = f"{mesh.urls.device}/metrics"
    before = _rejections((await mesh.http.get(metrics_url)).text)
    cabinet = next(iter(mesh.fleet))
    host, port = cabinet.host, cabinet.port

    # An unregistered device cannot even connect: the broker refuses its credentials.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            host, port, tls_context=cabinet.tls, identifier="GHOST-1", username="GHOST-1", password="guess"
        ):
            pass

    # A registered cabinet sends garbage and a well-formed message for a device id it cannot use.
    async with aiomqtt.Client(
        host,
        port,
        tls_context=cabinet.tls,
        identifier=f"{cabinet.cabinet_id}-probe-{uuid.uuid4().hex[:6]}",
        username=cabinet.cabinet_id,
        password=cabinet.password,
    ) as probe:
        await probe.publish(up_topic(cabinet.cabinet_id, UpChannel.RETURN), b"{not json", qos=1)
        await probe.publish(up_topic(cabinet.cabinet_id, UpChannel.HEARTBEAT), b'{"type":"heartbeat"}', qos=1)
        await probe.publish(up_topic(cabinet.cabinet_id, UpChannel.RETURN), b"x" * 20_000, qos=1)

    async def counted() -> dict[str, float] | None:
        now = _rejections((await mesh.http.get(metrics_url)).text)
        grew = now.get("invalid_payload", 0) - before.get("invalid_payload", 0) >= 2
        oversized = now.get("oversized", 0) - before.get("oversized", 0) >= 1
        return now if grew and oversized else None

    await wait_for(counted, timeout_s=10)
    ready = await mesh.http.get(f"{mesh.urls.device}/readyz")
    assert ready.status_code == 200
    # The probe shared the cabinet's credentials; make sure the cabinet itself is connected again.
    assert await cabinet.wait_online(10)
    source = await _cabinet_with_bank(api)
    borrowed = await api.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text


async def test_unauthenticated_and_foreign_access_is_refused(mesh: Mesh, user: PlatformClient) -> None:
    other = await new_user(mesh)
    source = await _cabinet_with_bank(user)
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental_id = borrowed.json()["rental_id"]
    peek = await other.call("GET", f"{mesh.urls.billing}/v1/rentals/{rental_id}")
    assert peek.status == 404
    anonymous = await mesh.http.post(f"{mesh.urls.billing}/v1/rentals", json={"code": source["id"]})
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    second = await user.borrow(source["id"])
    assert second.status == 409
    assert second.json()["code"] == "active_rental_exists"
    target = await _cabinet_with_free_slot(user, exclude=source["id"])
    cabinet: Cabinet = mesh.fleet[target["id"]]
    await cabinet.return_bank(borrowed.json()["bank_id"])
    await _rental_in(user, rental_id, {"settled"})


async def _events_for(topic: str, rental_id: str, types: set[str], timeout_s: float = 15) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from contracts import event_adapter

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"],
        group_id=f"e2e-trace-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while set(found) != types:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        envelope = event_adapter.validate_json(record.value or b"")
                        if envelope.type in types and str(getattr(envelope.data, "rental_id", "")) == rental_id:
                            found[envelope.type] = envelope
    finally:
        await consumer.stop()
    return found


async def test_a_request_trace_goes_to_the_device_and_back(mesh: Mesh, user: PlatformClient) -> None:
    trace = f"trace-{uuid.uuid4().hex[:12]}"
    source = await _cabinet_with_bank(user)
    borrowed = await user.call(
        "POST", f"{mesh.urls.billing}/v1/rentals", json={"code": source["id"]}, headers={"X-Correlation-ID": trace}
    )
    assert borrowed.status == 201, borrowed.response.text
    assert borrowed.response.headers["X-Correlation-ID"] == trace
    rental = borrowed.json()
    ejects = await _events_for("device.ejects.v1", rental["rental_id"], {"device.bank.ejected"})
    rentals = await _events_for("billing.rentals.v1", rental["rental_id"], {"billing.rental.started"})
    assert ejects["device.bank.ejected"].correlation_id == trace  # device-svc, after the cabinet's MQTT answer
    assert rentals["billing.rental.started"].correlation_id == trace
    target = await _cabinet_with_free_slot(user, exclude=source["id"])
    await asyncio.sleep(1.1)
    await mesh.fleet[target["id"]].return_bank(rental["bank_id"])
    await _rental_in(user, rental["rental_id"], {"settled"})
