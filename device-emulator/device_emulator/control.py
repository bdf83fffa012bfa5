"""The control HTTP API: lets the demo script and people act on emulated devices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from contracts.mqtt import DeviceId, Percent, SlotNo
from device_emulator.bank import BankModule
from device_emulator.cabinet import Cabinet, SlotUnavailable
from device_emulator.fleet import Fleet

log = logging.getLogger("device_emulator.control")

ACK_WAIT_S = 2.0
ONLINE_WAIT_S = 5.0


class ReturnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bank_id: DeviceId
    slot: SlotNo | None = None
    battery_pct: Percent | None = None
    ts_offset_ms: int = 0
    repeat: int = Field(default=1, ge=1, le=20)


class ReturnResponse(BaseModel):
    msg_id: str
    slot: int | None
    queued: bool = Field(description="The cabinet was offline: the report goes out when it reconnects")
    ack: dict[str, Any] | None = Field(description=f"The ReturnAck, if it came within {ACK_WAIT_S} s")


class FaultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stuck_motor: bool | None = None
    drop_acks: bool | None = None
    silent: bool | None = None
    clock_skew_ms: int | None = None
    drop_messages: bool | None = None
    duplicate: int | None = Field(default=None, ge=1, le=20)
    delay_s: float | None = Field(default=None, ge=0, le=600)
    firmware: Literal["none", "corrupt", "install", "boot"] | None = Field(
        default=None, description="How the next firmware updates fail (docs/firmware.md)"
    )


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ModuleFaultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drop_messages: bool | None = None
    duplicate: int | None = Field(default=None, ge=1, le=20)
    delay_s: float | None = Field(default=None, ge=0, le=600)
    clock_skew_ms: int | None = None
    battery_pct: Percent | None = None
    temperature_c: float | None = Field(default=None, ge=-60, le=150)
    charge_cycles: int | None = Field(default=None, ge=0)
    health_pct: Percent | None = None


class BankResponse(BaseModel):
    bank_id: str
    cabinet_id: str
    state: Literal["in_slot", "out"]
    slot: int | None
    battery_pct: int | None


def create_control_app(fleet: Fleet) -> FastAPI:
    app = FastAPI(title="pb device emulator control", version="1")

    def cabinet(cabinet_id: str) -> Cabinet:
        found = fleet.get(cabinet_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"unknown cabinet {cabinet_id}")
        return found

    @app.get("/livez")
    async def livez() -> dict[str, Any]:
        return {"status": "ok", "cabinets": len(fleet), "online": fleet.online_count}

    @app.get("/cabinets")
    async def list_cabinets() -> dict[str, Any]:
        return {"cabinets": [c.describe() for c in fleet]}

    @app.get("/cabinets/{cabinet_id}")
    async def get_cabinet(cabinet_id: str) -> dict[str, Any]:
        cab = cabinet(cabinet_id)
        view = cab.describe()
        view["recent_results"] = [r.model_dump(mode="json") for r in list(cab.results)[-10:]]
        view["recent_acks"] = [a.model_dump(mode="json") for a in list(cab.acks)[-10:]]
        return view

    @app.post("/cabinets/{cabinet_id}/return")
    async def return_bank(cabinet_id: str, body: ReturnRequest) -> ReturnResponse:
        cab = cabinet(cabinet_id)
        try:
            msg_id = await cab.return_bank(
                body.bank_id,
                slot=body.slot,
                battery_pct=body.battery_pct,
                ts_offset_ms=body.ts_offset_ms,
                repeat=body.repeat,
            )
        except SlotUnavailable as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        queued = not cab.online
        ack = None if queued else await cab.wait_ack(msg_id, ACK_WAIT_S)
        return ReturnResponse(
            msg_id=msg_id,
            slot=cab.slot_of(body.bank_id),
            queued=queued,
            ack=ack.model_dump(mode="json") if ack is not None else None,
        )

    @app.post("/cabinets/{cabinet_id}/offline")
    async def offline(cabinet_id: str) -> dict[str, Any]:
        cab = cabinet(cabinet_id)
        await cab.go_offline()
        return cab.describe()

    @app.post("/cabinets/{cabinet_id}/online")
    async def online(cabinet_id: str) -> dict[str, Any]:
        cab = cabinet(cabinet_id)
        await cab.go_online(timeout_s=ONLINE_WAIT_S)
        return cab.describe()

    @app.post("/cabinets/{cabinet_id}/faults")
    async def faults(cabinet_id: str, body: FaultsRequest) -> dict[str, Any]:
        cab = cabinet(cabinet_id)
        cab.set_faults(**body.model_dump())
        return cab.describe()

    @app.post("/cabinets/{cabinet_id}/plays")
    async def plays(cabinet_id: str) -> dict[str, Any]:
        """Report what the screen played since its last report now, instead of at its next turn (`plays`)."""
        report = await cabinet(cabinet_id).report_plays()
        return {"report": report.model_dump(mode="json") if report is not None else None}

    @app.get("/banks/{bank_id}")
    async def bank(bank_id: str) -> BankResponse:
        where = fleet.find_bank(bank_id)
        if where is None:
            raise HTTPException(status_code=404, detail=f"bank {bank_id} is not known to this fleet")
        return BankResponse(
            bank_id=where.bank_id,
            cabinet_id=where.cabinet_id,
            state=where.state,
            slot=where.slot,
            battery_pct=where.battery_pct,
        )

    def module(bank_id: str) -> BankModule:
        found = fleet.banks.get(bank_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no bank module {bank_id}")
        return found

    @app.get("/modules")
    async def list_modules() -> dict[str, Any]:
        return {"modules": [b.describe() for b in fleet.banks.values()]}

    @app.get("/modules/{bank_id}")
    async def get_module(bank_id: str) -> dict[str, Any]:
        return module(bank_id).describe()

    @app.post("/modules/{bank_id}/report")
    async def module_report(bank_id: str) -> dict[str, Any]:
        bank = module(bank_id)
        return {"msg_id": await bank.report(), **bank.describe()}

    @app.post("/modules/{bank_id}/move")
    async def module_move(bank_id: str, body: MoveRequest) -> dict[str, Any]:
        bank = module(bank_id)
        return {"msg_id": await bank.move_to(body.lat, body.lon), **bank.describe()}

    @app.post("/modules/{bank_id}/offline")
    async def module_offline(bank_id: str) -> dict[str, Any]:
        bank = module(bank_id)
        await bank.go_offline()
        return bank.describe()

    @app.post("/modules/{bank_id}/online")
    async def module_online(bank_id: str) -> dict[str, Any]:
        bank = module(bank_id)
        await bank.go_online(timeout_s=ONLINE_WAIT_S)
        return bank.describe()

    @app.post("/modules/{bank_id}/faults")
    async def module_faults(bank_id: str, body: ModuleFaultsRequest) -> dict[str, Any]:
        bank = module(bank_id)
        bank.set_faults(**body.model_dump())
        return bank.describe()

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the emulator process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ControlServer:
    """The control API served by uvicorn inside the running event loop."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server = server
        self._task = task
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()


async def start_control_server(fleet: Fleet, host: str = "127.0.0.1", port: int = 8010) -> ControlServer:
    """Bind `host:port` (0: the OS picks a free port, see `.port`) and serve until `stop()`."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(create_control_app(fleet), log_config=None, access_log=False, lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="control-api")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("control API exited during startup")
        await asyncio.sleep(0.01)
    control = ControlServer(server, task, sock)
    log.info("control api listening", extra={"host": control.host, "port": control.port, "url": control.url})
    return control
