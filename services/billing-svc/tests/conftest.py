"""Integration fixtures: the real database and broker; the test plays device-svc and asset-credit-svc.

- device-svc: `FakeDevice` consumes EjectBank from device.commands.v1 and answers on device.ejects.v1
  as each test scripted per scanned code; it also produces BankReturned to device.returns.v1.
- asset-credit-svc: a stand-in FastAPI app serving `GET /v1/wallet` on a real uvicorn server
  (port chosen by the OS), and ChargeSettled/ChargeFailed produced to asset.payments.v1.
"""

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billing_svc.main import create_app
from billing_svc.settings import Settings
from contracts import Envelope, Topic, event_adapter, new_event
from contracts.events import (
    BankEjected,
    BankReturned,
    ChargeFailed,
    EjectBank,
    EjectFailed,
    EjectFailureReason,
    EventData,
)
from contracts.regions import RegionRef
from kit.app import Runtime
from kit.kafka import make_producer
from kit.testing import (
    app_client,
    kafka_bootstrap,
    migrated_database,
    serve_app,
    truncate_all,
)

SERVICE_DIR = Path(__file__).resolve().parents[1]


async def _bounded(awaitable: Awaitable[Any], what: str, timeout_s: float = 20.0) -> None:
    """A teardown that hangs must fail the run loudly, not stall it."""
    try:
        await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {timeout_s}s")


# ---- asset-credit-svc stand-in --------------------------------------------------------------


@dataclass
class FakeWallets:
    balances: dict[str, int] = field(default_factory=dict)
    default_fen: int = 1_000
    seen_tokens: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    # device-svc's GET /v1/banks/rented-by-me answer per user (the same stand-in serves it)
    rented: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/wallet")
        async def wallet(request: Request) -> JSONResponse:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not token:
                return JSONResponse({"code": "unauthorized"}, status_code=401)
            self.seen_tokens.append(token)
            user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
            body = {"user_id": user_id, "balance_fen": self.balances.get(user_id, self.default_fen)}
            if user_id in self.refusals:
                body |= {
                    "borrow_refusal": self.refusals[user_id],
                    "borrow_refusal_detail": "scripted",
                    "credit_score": 1,
                }
            return JSONResponse(body)

        @app.get("/v1/banks/rented-by-me")
        async def rented_by_me(request: Request) -> JSONResponse:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            user_id = jwt.decode(token, options={"verify_signature": False})["sub"] if token else ""
            if user_id not in self.rented:
                return JSONResponse({"code": "no_rented_bank"}, status_code=404)
            return JSONResponse(self.rented[user_id])

        return app


@pytest.fixture(scope="session")
async def wallets() -> AsyncIterator[FakeWallets]:
    fake = FakeWallets()
    async with serve_app(fake.app(), lifespan="off", timeout_s=20) as url:
        fake.url = url
        yield fake


@pytest.fixture
def dead_url() -> str:
    """An address where nothing listens."""
    return f"http://127.0.0.1:{free_port_nobody_listens_on()}"


def free_port_nobody_listens_on() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---- device-svc stand-in --------------------------------------------------------------------

Behaviour = Callable[[EjectBank], EventData | None]


def ejects(bank_id: str, cabinet_id: str, slot: int = 1) -> Behaviour:
    def answer(command: EjectBank) -> EventData:
        return BankEjected(
            command_id=command.command_id,
            rental_id=command.rental_id,
            bank_id=bank_id,
            cabinet_id=cabinet_id,
            slot=slot,
            battery_pct=90,
            ejected_at=datetime.now(UTC),
            bank_model="PB-5000",
            region=RegionRef(division_code="440305"),  # the cabinet's region, as device-svc reports it
        )

    return answer


def fails(reason: EjectFailureReason) -> Behaviour:
    def answer(command: EjectBank) -> EventData:
        return EjectFailed(
            command_id=command.command_id,
            rental_id=command.rental_id,
            bank_id=None,
            cabinet_id=None,
            reason=reason,
            detail="scripted by the test",
        )

    return answer


def ejects_once(bank_id: str, cabinet_id: str) -> Behaviour:
    """A real bank comes out once; later commands for it find it gone."""
    done: list[bool] = []

    def answer(command: EjectBank) -> EventData | None:
        if done:
            return fails(EjectFailureReason.BANK_NOT_AVAILABLE)(command)
        done.append(True)
        return ejects(bank_id, cabinet_id)(command)

    return answer


def silent(_: EjectBank) -> None:
    return None


class FakeDevice:
    """Answers EjectBank commands for the codes a test scripted; other codes are not ours."""

    # Scripted answers, reached through the `device` fixture (conftest is not importable under
    # --import-mode=importlib): device.behaviours[code] = device.ejects(bank, cabinet)
    ejects = staticmethod(ejects)
    fails = staticmethod(fails)
    ejects_once = staticmethod(ejects_once)
    silent = staticmethod(silent)

    def ejects_after(
        self, delay_s: float, bank_id: str, cabinet_id: str, *, no_answer_first: bool = False
    ) -> Behaviour:
        """The cabinet ejects at once but its result reaches billing only `delay_s` after the command (queued
        behind bulk traffic); with `no_answer_first`, device-svc's deadline sweep reports device_no_answer
        before the late result arrives."""

        def answer(command: EjectBank) -> None:
            ejected = ejects(bank_id, cabinet_id)(command)

            async def later() -> None:
                if no_answer_first:
                    await self.emit(fails(EjectFailureReason.DEVICE_NO_ANSWER)(command), key=cabinet_id)
                await asyncio.sleep(delay_s)
                await self.emit(ejected, key=cabinet_id)

            task = asyncio.get_running_loop().create_task(later())
            self._later.add(task)
            task.add_done_callback(self._later.discard)

        return answer

    def __init__(self, bootstrap: str) -> None:
        self._later: set[asyncio.Task[None]] = set()
        self._bootstrap = bootstrap
        self.producer: AIOKafkaProducer = make_producer(bootstrap, "test-fake-device")
        self.behaviours: dict[str, Behaviour] = {}
        self.commands: list[EjectBank] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        consumer = AIOKafkaConsumer(
            Topic.DEVICE_COMMANDS.value,
            bootstrap_servers=self._bootstrap,
            group_id=f"billing-test-device-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="latest",
            enable_auto_commit=True,
            metadata_max_age_ms=5_000,
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())
        for _ in range(300):
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        assert consumer.assignment(), "the fake device got no partitions of device.commands.v1"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        await self.producer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        envelope = event_adapter.validate_json(record.value)
                    except ValueError:
                        continue
                    command = envelope.data
                    if not isinstance(command, EjectBank):
                        continue
                    behaviour = self.behaviours.get(command.code)
                    if behaviour is None:
                        continue
                    self.commands.append(command)
                    reply = behaviour(command)
                    if reply is not None:
                        key = getattr(reply, "cabinet_id", None) or command.code
                        await self.emit(reply, key=key)

    async def emit(self, data: EventData, *, key: str) -> Envelope:
        envelope = new_event(data, key=key, producer="test-fake")
        await self.send(envelope)
        return envelope

    async def send(self, envelope: Envelope) -> None:
        await self.producer.send_and_wait(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode())


@pytest.fixture(scope="session")
async def device() -> AsyncIterator[FakeDevice]:
    fake = FakeDevice(kafka_bootstrap())
    await fake.start()
    yield fake
    await _bounded(fake.stop(), "fake device shutdown")


# ---- billing-svc ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def database_url() -> str:
    return await migrated_database("billing", SERVICE_DIR)


def make_settings(database_url: str, keypair: tuple[Path, Path], asset_svc_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "pb_env": "test",
        "database_url": database_url,
        "kafka_bootstrap": kafka_bootstrap(),
        # A fresh group per run: the broker is shared, old offsets are not ours.
        "kafka_consumer_group": f"billing-svc-test-{uuid.uuid4().hex[:8]}",
        "jwt_public_key_file": keypair[1],
        "asset_svc_url": asset_svc_url,
        "device_svc_url": asset_svc_url,  # the stand-in also answers device-svc's rented-by-me
        "outbox_poll_interval_s": 0.2,
        # Tests run the reconciliation job themselves (a background one would race TRUNCATE).
        "reconcile_interval_s": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_for(database_url: str, keypair: tuple[Path, Path]) -> Callable[..., Settings]:
    def build(asset_svc_url: str, **overrides: Any) -> Settings:
        return make_settings(database_url, keypair, asset_svc_url, **overrides)

    return build


async def wait_ready(runtime: Runtime, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        try:
            for check in runtime.readiness_checks.values():
                await check()
            return
        except Exception:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.2)


async def wait_caught_up(runtime: Runtime, device: FakeDevice, timeout_s: float = 120.0) -> None:
    """A fresh consumer group reads the shared dev broker from the start: wait until each of the
    app's consumers has handled a probe sent now, so no test waits behind an old backlog."""
    now = datetime.now(UTC)
    probes = [
        EjectFailed(
            command_id=uuid.uuid4(),
            rental_id=uuid.uuid4(),
            bank_id=None,
            cabinet_id=None,
            reason=EjectFailureReason.EJECT_FAILED,
        ),
        BankReturned(
            report_id=f"probe-{uuid.uuid4().hex}",
            bank_id=f"PROBE-{uuid.uuid4().hex[:8]}",
            cabinet_id="PROBE",
            slot=1,
            battery_pct=None,
            returned_at=now,
            device_reported_at=now,
            received_at=now,
        ),
        ChargeFailed(
            charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=uuid.uuid4(), amount_fen=1, reason="probe"
        ),
    ]
    ids = [(await device.emit(p, key="probe")).event_id for p in probes]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        async with runtime.sessionmaker() as session:
            seen = (
                await session.execute(
                    text("SELECT count(DISTINCT event_id) FROM processed_events WHERE event_id = ANY(:ids)"),
                    {"ids": ids},
                )
            ).scalar_one()
        if seen == len(ids):
            return
        if loop.time() > end:
            pytest.fail("billing-svc's consumers did not catch up with the broker")
        await asyncio.sleep(0.2)


@dataclass
class Billing:
    client: httpx.AsyncClient
    runtime: Runtime
    database_url: str


@pytest.fixture(scope="session")
async def billing_app(
    database_url: str, keypair: tuple[Path, Path], wallets: FakeWallets, device: FakeDevice
) -> AsyncIterator[Billing]:
    app = create_app(make_settings(database_url, keypair, wallets.url))
    running = app_client(app)
    client = await running.__aenter__()
    try:
        runtime: Runtime = app.state.runtime
        await wait_ready(runtime)
        await wait_caught_up(runtime, device)
        yield Billing(client=client, runtime=runtime, database_url=database_url)
    finally:
        await _bounded(running.__aexit__(None, None, None), "billing-svc shutdown")


@pytest.fixture
async def billing(billing_app: Billing, wallets: FakeWallets, device: FakeDevice) -> Billing:
    for attempt in range(5):
        try:
            # A consumer still handling a late event of the previous test can deadlock with TRUNCATE.
            await truncate_all(billing_app.database_url)
            break
        except DBAPIError as exc:
            if "deadlock" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.2)
    wallets.balances.clear()
    wallets.refusals.clear()
    wallets.rented.clear()
    device.behaviours.clear()
    return billing_app
