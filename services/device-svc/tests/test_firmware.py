"""Firmware updates (issue 13): signed images, signed expiring download links, staged rollouts that emulated
cabinets carry out over MQTT and HTTP, a device refusing a badly signed image, and a rollout halting when
failures pass its threshold."""

import asyncio
import base64
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import FirmwareRolloutState as R
from contracts.events import FirmwareUpdateState as U
from contracts.mqtt import FirmwareUpdate, firmware_signed_bytes
from device_emulator import Cabinet as EmulatedCabinet
from device_svc.firmware import service as firmware
from device_svc.firmware.lifecycle import (
    ROLLOUT_TRANSITIONS,
    RolloutAction,
    RolloutTransitionNotAllowed,
    UpdateAction,
    rollout_next,
    update_next,
)
from kit.signed_urls import UrlSigner
from kit.testing import eventually

from .conftest import FIRMWARE_HTTP_PORT

IMAGE = b"\x7fFW" + bytes(range(256)) * 64  # 16 KiB and a bit: larger than any MQTT payload


def operator(signer: Any) -> dict[str, str]:
    token = signer.issue("00000000-0000-0000-0000-00000000f1f1", kind="admin", roles=["operator"])
    return {"Authorization": f"Bearer {token}"}


def field_staff(signer: Any) -> dict[str, str]:
    token = signer.issue("00000000-0000-0000-0000-00000000f1f2", kind="admin", roles=["field_maintenance"])
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ without the service


def test_the_transition_tables_refuse_what_they_do_not_hold() -> None:
    assert rollout_next(R.RUNNING, RolloutAction.PAUSE) is R.PAUSED
    assert rollout_next(R.HALTED, RolloutAction.RESUME) is R.RUNNING
    with pytest.raises(RolloutTransitionNotAllowed):
        rollout_next(R.COMPLETED, RolloutAction.RESUME)
    assert not any(state in (R.COMPLETED, R.CANCELLED) for state, _ in ROLLOUT_TRANSITIONS)
    assert update_next(U.PENDING, UpdateAction.SEND) is U.SENT
    assert update_next(U.INSTALLING, UpdateAction.ROLLED_BACK) is U.ROLLED_BACK
    assert update_next(U.REBOOTING, UpdateAction.TIMEOUT) is U.FAILED
    assert update_next(U.VERIFIED, UpdateAction.DOWNLOADING) is None  # a late report goes nowhere
    assert update_next(U.DONE, UpdateAction.FAILED) is None
    assert update_next(U.SENT, UpdateAction.CANCEL) is None  # a cabinet mid-install is not cancelled


def test_a_rollout_takes_its_percentage_in_a_stable_order_and_its_region() -> None:
    futian = SimpleNamespace(lat=22.54, lon=114.05, region="")  # 440304
    nanshan = SimpleNamespace(lat=22.53, lon=113.93, region="")  # 440305
    fleet = [SimpleNamespace(id=f"C-{n}", **vars(futian if n % 2 else nanshan)) for n in range(10)]
    half = firmware.choose(fleet, 50, None)
    assert len(half) == 5 and firmware.choose(fleet, 20, None) == half[:2]  # the same cabinets first
    assert len(firmware.choose(fleet, 1, None)) == 1  # at least one
    in_futian = firmware.choose(fleet, 100, "440304")
    assert {c for _, c in in_futian} == {f"C-{n}" for n in range(1, 10, 2)}
    assert len(firmware.choose(fleet, 100, "440300")) == 10  # the city holds both districts


def test_the_threshold_counts_failures_and_their_share() -> None:
    rollout = SimpleNamespace(max_failures=1, max_failure_pct=None)
    assert firmware.over_threshold(rollout, {"failed": 1, "done": 5}) is None  # type: ignore[arg-type]
    assert firmware.over_threshold(rollout, {"failed": 1, "rolled_back": 1}) is not None  # type: ignore[arg-type]
    share = SimpleNamespace(max_failures=None, max_failure_pct=25)
    assert firmware.over_threshold(share, {"failed": 1, "done": 3}) is None  # type: ignore[arg-type]
    assert firmware.over_threshold(share, {"rolled_back": 1, "done": 2}) is not None  # type: ignore[arg-type]


# ------------------------------------------------------------------ with the service


@pytest.fixture
async def http(running_service: httpx.AsyncClient) -> AsyncIterator[str]:
    """The session's app over real HTTP (its lifespan already runs in-process), where download links point."""
    app = running_service._transport.app  # type: ignore[attr-defined]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=FIRMWARE_HTTP_PORT, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), timeout=10, interval=0.05, what="the HTTP server")
        yield f"http://127.0.0.1:{FIRMWARE_HTTP_PORT}"
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


async def upload(service_client: httpx.AsyncClient, signer: Any, version: str, **params: str) -> httpx.Response:
    return await service_client.post(
        "/v1/ops/firmware/images",
        params={"model": "CAB-STD", "version": version, **params},
        content=IMAGE,
        headers=operator(signer) | {"Content-Type": "application/octet-stream"},
    )


async def test_images_are_checked_signed_and_served_only_through_a_valid_link(service, signer, settings, keypair, http):
    digest = hashlib.sha256(IMAGE).hexdigest()
    wrong = await upload(service, signer, "2.0.0", sha256="0" * 64)
    assert wrong.status_code == 422 and wrong.json()["code"] == "checksum_mismatch"
    bad_version = await upload(service, signer, "2.0.0 beta")
    assert bad_version.status_code == 422
    denied = await service.post(
        "/v1/ops/firmware/images",
        params={"model": "CAB-STD", "version": "2.0.0"},
        content=IMAGE,
        headers=field_staff(signer),
    )
    assert denied.status_code == 403
    made = await upload(service, signer, "2.0.0", sha256=digest)
    assert made.status_code == 201, made.text
    image = made.json()
    assert image["sha256"] == digest and image["size"] == len(IMAGE)
    public = serialization.load_pem_public_key(keypair[1].read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    public.verify(base64.b64decode(image["signature"]), firmware_signed_bytes("CAB-STD", "2.0.0", digest))
    again = await upload(service, signer, "2.0.0")
    assert again.status_code == 409 and again.json()["code"] == "firmware_version_exists"
    empty = await service.post(
        "/v1/ops/firmware/images",
        params={"model": "CAB-STD", "version": "2.0.1"},
        content=b"",
        headers=operator(signer) | {"Content-Type": "application/octet-stream"},
    )
    assert empty.status_code == 422 and empty.json()["code"] == "empty_image"

    links = UrlSigner(settings.firmware_url_key.get_secret_value().encode(), 60, "/v1/firmware")
    async with httpx.AsyncClient(base_url=http) as device:
        fetched = await device.get(links.url(image["image_id"]))
        assert fetched.status_code == 200 and fetched.content == IMAGE
        path, query = links.url(image["image_id"]).split("?")
        exp = query.split("&")[0]
        forged = await device.get(f"{path}?{exp}&sig={'a' * 64}")
        assert forged.status_code == 403 and forged.json()["code"] == "link_invalid"
        other = await device.get(f"/v1/firmware/{uuid.uuid4()}?{query}")  # the signature is the image's
        assert other.status_code == 403
        expired = await device.get(links.url(image["image_id"], time.time() - 120))
        assert expired.status_code == 410 and expired.json()["code"] == "link_expired"
        stretched = await device.get(f"{path}?exp={int(time.time()) + 86400}&{query.split('&')[1]}")
        assert stretched.status_code == 403  # a later expiry breaks the signature

    bad_rollout = await service.post(
        "/v1/ops/firmware/rollouts", json={"image_id": image["image_id"], "percent": 0}, headers=operator(signer)
    )
    assert bad_rollout.status_code == 422
    no_image = await service.post(
        "/v1/ops/firmware/rollouts", json={"image_id": str(uuid.uuid4())}, headers=operator(signer)
    )
    assert no_image.status_code == 404 and no_image.json()["code"] == "firmware_image_not_found"
    nowhere = await service.post(
        "/v1/ops/firmware/rollouts", json={"image_id": image["image_id"], "region": "110101"}, headers=operator(signer)
    )
    assert nowhere.status_code == 422 and nowhere.json()["code"] == "no_target_cabinets"


@contextlib.asynccontextmanager
async def emulated(
    fleet, broker, tap, keypair, ids: list[str], key_pem: bytes | None = None
) -> AsyncIterator[dict[str, EmulatedCabinet]]:
    cabinets = {}
    for cabinet_id in ids:
        entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == cabinet_id)
        cabinets[cabinet_id] = EmulatedCabinet(
            cabinet_id,
            entry["password"],
            broker.host,
            broker.port,
            entry["slots"],
            slot_count=entry["slot_count"],
            tls=broker.tls,
            heartbeat_s=60,
            motor_delay_s=0.0,
            firmware="1.0.0",
            firmware_key=key_pem if key_pem is not None else keypair[1].read_bytes(),
        )
    try:
        for cab in cabinets.values():
            await cab.start()
        for cabinet_id in ids:
            await tap.wait_for("device.cabinet.status_changed", cabinet_id=cabinet_id, online=True)
        yield cabinets
    finally:
        for cab in cabinets.values():
            await cab.stop()


async def registry_firmware(database_url: str) -> dict[str, str | None]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return dict((await conn.execute(text("SELECT id, firmware FROM cabinets"))).all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def rollout_state(client: httpx.AsyncClient, signer: Any, rollout_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/ops/firmware/rollouts/{rollout_id}", headers=operator(signer))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_staged_rollout_to_a_percentage_updates_one_cabinet_at_a_time(
    service, fleet, broker, tap, keypair, signer, http, database_url
):
    ids = [c["cabinet_id"] for c in fleet["cabinets"]]
    async with emulated(fleet, broker, tap, keypair, ids) as cabinets:
        image = (await upload(service, signer, "1.1.0")).json()
        made = await service.post(
            "/v1/ops/firmware/rollouts",
            json={"image_id": image["image_id"], "percent": 67, "batch_size": 1, "max_failures": 0},
            headers=operator(signer),
        )
        assert made.status_code == 201, made.text
        rollout_id = made.json()["rollout_id"]
        assert made.json()["counts"] == {"pending": 2}  # 67 % of 3
        chosen = [
            c for _, c in firmware.choose([SimpleNamespace(id=i, lat=0, lon=0, region="") for i in ids], 67, None)
        ]

        async def completed() -> bool:
            return (await rollout_state(service, signer, rollout_id))["state"] == "completed"

        await eventually(completed, timeout=30, interval=0.2, what="the rollout to complete")
        body = await rollout_state(service, signer, rollout_id)
        assert body["counts"] == {"done": 2}
        assert [c["cabinet_id"] for c in body["cabinets"]] == chosen
        assert all(c["from_version"] == "1.0.0" for c in body["cabinets"])
        assert {i: cabinets[i].firmware for i in ids} == {i: "1.1.0" if i in chosen else "1.0.0" for i in ids}
        registry = await registry_firmware(database_url)
        assert all(registry[i] == "1.1.0" for i in chosen)
        detail = await service.get(f"/v1/cabinets/{chosen[0]}", headers=operator(signer))
        assert (detail.json()["model"], detail.json()["firmware"]) == ("CAB-STD", "1.1.0"), detail.text
        # Progress, in order, per cabinet (one partition per rollout: the completion comes after every change);
        # the second cabinet started only after the first was done (batch size 1).
        await tap.wait_for("device.firmware_rollout.changed", rollout_id=uuid.UUID(rollout_id), to_state=R.COMPLETED)
        changes = tap.matching("device.firmware_update.changed", rollout_id=uuid.UUID(rollout_id))
        stages = {i: [c.to_state.value for c in changes if c.cabinet_id == i] for i in chosen}
        for i in chosen:
            assert stages[i] == ["sent", "downloading", "downloading", "verified", "installing", "rebooting", "done"]
        order = [(c.cabinet_id, c.to_state.value) for c in changes]
        assert order.index((chosen[0], "done")) < order.index((chosen[1], "sent"))
        assert [r.stage.value for r in cabinets[chosen[0]].updater.reports][:2] == ["downloading", "downloading"]
        assert cabinets[chosen[0]].updater.reports[1].progress_pct == 100


async def test_failures_past_the_threshold_halt_the_rollout(
    service, fleet, broker, tap, keypair, signer, http, database_url
):
    ids = [c["cabinet_id"] for c in fleet["cabinets"]]
    order = [c for _, c in firmware.choose([SimpleNamespace(id=i, lat=0, lon=0, region="") for i in ids], 100, None)]
    stranger = Ed25519PrivateKey.generate().public_key()
    wrong_key = stranger.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    async with (
        emulated(fleet, broker, tap, keypair, order[:1], key_pem=wrong_key) as first,
        emulated(fleet, broker, tap, keypair, order[1:]) as rest,
    ):
        rest[order[1]].set_faults(firmware="boot")  # installs, does not boot healthy, falls back
        image = (await upload(service, signer, "1.2.0")).json()
        made = await service.post(
            "/v1/ops/firmware/rollouts",
            json={"image_id": image["image_id"], "batch_size": 1, "max_failures": 1},
            headers=operator(signer),
        )
        rollout_id = made.json()["rollout_id"]

        async def halted() -> bool:
            return (await rollout_state(service, signer, rollout_id))["state"] == "halted"

        await eventually(halted, timeout=30, interval=0.2, what="the rollout to halt")
        body = await rollout_state(service, signer, rollout_id)
        assert body["counts"] == {"failed": 1, "rolled_back": 1, "pending": 1}
        assert "2 cabinets failed" in body["reason"]
        per = {c["cabinet_id"]: c for c in body["cabinets"]}
        assert per[order[0]]["error"] == "bad_signature"  # the device refused an image its key did not sign
        assert per[order[1]]["state"] == "rolled_back" and per[order[1]]["error"] == "boot_failed"
        assert first[order[0]].firmware == "1.0.0" and rest[order[1]].firmware == "1.0.0"
        assert [r.stage.value for r in rest[order[1]].updater.reports][-1] == "rolled_back"
        assert (await registry_firmware(database_url))[order[1]] == "1.0.0"
        await tap.wait_for("device.firmware_rollout.changed", rollout_id=uuid.UUID(rollout_id), to_state=R.HALTED)

        paused = await service.post(f"/v1/ops/firmware/rollouts/{rollout_id}/pause", json={}, headers=operator(signer))
        assert paused.status_code == 409 and paused.json()["code"] == "rollout_transition_not_allowed"
        cancelled = await service.post(
            f"/v1/ops/firmware/rollouts/{rollout_id}/cancel", json={"reason": "bad build"}, headers=operator(signer)
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled" and cancelled.json()["counts"]["cancelled"] == 1
        assert rest[order[2]].updater.reports == []  # never sent


async def test_a_cabinet_with_an_eject_waiting_is_not_started(service, fleet, online, signer, database_url):
    cab = await online("CAB-0001")
    context = service._transport.app.state.runtime.extras["firmware"]
    engine = create_async_engine(database_url)
    command = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO commands (cmd_id, rental_id, code, cabinet_id, bank_id, slot, status, deadline) "
                    "VALUES (:id, :id, 'CAB-0001', 'CAB-0001', 'PB-000003', 3, 'sent', now() + interval '1 minute')"
                ),
                {"id": command},
            )
        image = (await upload(service, signer, "1.3.0")).json()
        made = await service.post(
            "/v1/ops/firmware/rollouts",
            json={"image_id": image["image_id"], "region": "440304"},
            headers=operator(signer),
        )
        assert made.status_code == 201, made.text
        rollout_id = made.json()["rollout_id"]
        # A deliberate "nothing arrives" window: the sweep rung at creation runs within it and must send nothing
        # (no event marks "swept and held back"; the next assertion is that the update stayed pending).
        await asyncio.sleep(1.0)
        body = await rollout_state(service, signer, rollout_id)
        assert body["counts"].get("sent", 0) == 0 and body["counts"]["pending"] >= 1, body
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE commands SET status = 'succeeded' WHERE cmd_id = :id"), {"id": command})
        context.ring(datetime.now(UTC))
        while True:  # the eject answered: the next sweep sends the update
            msg = await cab.receive(timeout=15)
            if isinstance(msg, FirmwareUpdate):
                break
        assert msg.version == "1.3.0" and msg.url.startswith(f"http://127.0.0.1:{FIRMWARE_HTTP_PORT}/v1/firmware/")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM commands WHERE cmd_id = :id"), {"id": command})
        await engine.dispose()
