"""An emulated cabinet of another maker: it speaks the volinks "Powerbank Protocol V1"
(contracts.vendors.volinks) instead of the platform's own. It keeps the emulated cabinet's slots, ejects,
returns and faults (cabinet.py) and changes only what goes over the wire: JSON commands on
`/powerbank/<id>/user/get` (`check`, `upload_all`, `popup_sn`, `popup` with `timestamp` + `ttl`), binary
frames on `/powerbank/<id>/user/update` and a 0x7A heartbeat on `/powerbank/<id>/user/heart`. No last
will, no retained status, no answer to a return (volinks has none)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import aiomqtt
from pydantic import ValidationError

from contracts.mqtt import (
    Eject,
    EjectResult,
    EjectResultCode,
    Heartbeat,
    Hello,
    Inventory,
    ReturnAck,
    ReturnReport,
    SlotAbnormal,
    SlotFault,
    UpMessage,
)
from contracts.vendors import volinks as v
from device_emulator.cabinet import Cabinet

log = logging.getLogger("device_emulator.volinks")

HEARTBEAT_S = 540.0  # the documentation's 9 minutes
NO_EXPIRY_MS = 2**62
POPUP_STATES = {
    EjectResultCode.OK: v.PopupState.OK,
    EjectResultCode.EXPIRED: v.PopupState.TTL_EXPIRED,
    EjectResultCode.BANK_NOT_PRESENT: v.PopupState.SN_NOT_FOUND,
    EjectResultCode.MOTOR_FAULT: v.PopupState.NOT_OUT_SN_READABLE,
}


def _sn(bank_id: str | None) -> int:
    sn = v.sn_of(bank_id) if bank_id is not None else None
    return sn or 0


class VolinksCabinet(Cabinet):
    kind = "volinks"
    announces_status = False

    def __init__(
        self, *args: Any, heartbeat_s: float = HEARTBEAT_S, announce_on_connect: bool = True, **kwargs: Any
    ) -> None:
        """`announce_on_connect=False`: the cabinet sends its 0x10 only when asked (`check`, `upload_all`),
        as firmware that uploads over HTTP does (docs/vendors/volinks.md, decision 9)."""
        super().__init__(*args, heartbeat_s=heartbeat_s, **kwargs)
        self.announce_on_connect = announce_on_connect
        self._cmd_seq = itertools.count(1)
        self._by_slot: set[str] = set()  # our cmd_ids of `popup` (by position): answered with 0x21
        self.commands: list[v.VolinksCommand] = []
        self.raw_sent: list[bytes] = []

    # ------------------------------------------------------------------ connection

    async def _session(self) -> None:
        client = self._new_client()  # volinks cabinets leave no will: presence is their heartbeat
        async with client:
            self._entered = True
            self._client = client
            self._offline.clear()
            try:
                if not self._want_online.is_set():
                    self._abort_socket()
                await client.subscribe(v.command_topic(self.device_id), qos=1)
                if self.announce_on_connect:
                    await self._hello(client)  # "Periodic Upload (Right now)" on boot, here over MQTT
                self._online.set()
                self.stats["connects"] += 1
                self.last_error = None
                self._log(logging.INFO, "online", connects=self.stats["connects"])
                await self._serve(client)
            finally:
                self._client = None
                self._online.clear()

    def _tick_start(self, now: float) -> float:
        return now + self.heartbeat_s

    # ------------------------------------------------------------------ wire: up

    async def _send(self, client: aiomqtt.Client, msg: UpMessage, times: int = 1) -> None:
        """The cabinet's own events as volinks frames."""
        topic = v.update_topic(self.device_id)
        frame: v.Frame
        if isinstance(msg, Hello | Inventory):
            frame = self._status_frame()
        elif isinstance(msg, Heartbeat):
            rssi = msg.rssi_dbm if msg.rssi_dbm is not None else -80
            csq = max(0, min(31, (rssi + 113) // 2))
            frame = v.HeartbeatFrame(board=0x10, signal=f"CSQ:{csq};BP:0", csq=csq, backup_power=0)
            topic = v.heart_topic(self.device_id)
        elif isinstance(msg, EjectResult):
            frame = self._result_frame(msg)
        elif isinstance(msg, ReturnReport):
            frame = v.ReturnFrame(
                board=1,
                hole=msg.slot,
                area=0,
                sn=_sn(msg.bank_id),
                state=v.ReturnState.OK,
                bank_version=13,
                soc=msg.battery_pct if msg.battery_pct is not None else 0,
            )
        elif isinstance(msg, SlotAbnormal):
            frame = v.ReturnFrame(
                board=1, hole=msg.slot, area=0, sn=0, state=v.ReturnState.NO_SN, bank_version=0, soc=0
            )
        else:
            return
        await self.send_raw(v.encode(frame), topic=topic, times=times, client=client)

    async def send_raw(
        self, payload: bytes, *, topic: str | None = None, times: int = 1, client: aiomqtt.Client | None = None
    ) -> None:
        """Publish bytes as they are (a malformed frame, for tests)."""
        client = client or self._client
        if client is None:
            raise aiomqtt.MqttError(f"{self.device_id} is not connected")
        for _ in range(times):
            await client.publish(topic or v.update_topic(self.device_id), payload, qos=1)
            self.raw_sent.append(payload)

    def _status_frame(self) -> v.StatusFrame:
        slots = list(self._slots.values())
        holes = []
        for s in slots:
            present = s.bank_id is not None
            state = 0 if not present else (2 if s.fault is SlotFault.BANK_ERROR else 1)
            holes.append(
                v.Hole(
                    hole=s.slot,
                    state=state,
                    current=0,
                    voltage=0xEC if present else 0,
                    area=0,
                    sn=_sn(s.bank_id) if present else 0,
                    soc=(s.battery_pct or 0) if present else 0,
                    temperature_c=31 if present else 0,
                    charge_volt=50 if present else 0,
                    charge_curr=1 if present and s.charging else 0,
                    soft_version=13 if present else 0,
                    sensor=0x00 if present else 0x80,
                )
            )
        boards = tuple(
            v.Board(index=i + 1, temperature_c=0, soft_version=4, hard_version=0x16)
            for i in range(-(-len(holes) // v.HOLES_PER_BOARD))
        )
        return v.StatusFrame(boards=boards, holes=tuple(holes))

    def _result_frame(self, result: EjectResult) -> v.Frame:
        state = POPUP_STATES.get(result.result, v.PopupState.FAILED)
        if result.cmd_id in self._by_slot:
            return v.PopupSlotFrame(board=1, hole=result.slot or 1, state=int(state == v.PopupState.OK), valve=2)
        return v.PopupSnFrame(hole=result.slot or 0, sn=_sn(result.bank_id), state=state, valve=6)

    # ------------------------------------------------------------------ wire: down

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        payload = message.payload
        try:
            if not isinstance(payload, str | bytes | bytearray):
                raise TypeError(f"unexpected payload type {type(payload).__name__}")
            command = v.VolinksCommand.model_validate_json(payload)
        except (ValidationError, TypeError) as exc:
            self.stats["invalid_commands"] += 1
            log.warning("invalid volinks command", extra={"cabinet_id": self.cabinet_id, "error": str(exc)[:300]})
            return
        self.commands.append(command)
        if command.cmd in ("check", "upload_all"):
            await self._publish_up(client, Inventory(msg_id=self.new_msg_id(), ts=self.device_now_ms(), slots=[]))
            return
        self.stats["commands"] += 1
        if self.faults.silent:
            return
        await self._on_eject(client, self._as_eject(command))

    def _as_eject(self, command: v.VolinksCommand) -> Eject:
        """The command in the emulator's own terms; each one is new (volinks has no command id to repeat)."""
        cmd_id = f"vl-{self.device_id}-{next(self._cmd_seq)}"
        issued = int(command.timestamp) * 1000 if command.timestamp is not None else self.device_now_ms()
        expires = issued + int(command.ttl) * 1000 if command.timestamp and command.ttl else NO_EXPIRY_MS
        data = int(command.data) if command.data is not None else 0
        if command.cmd == "popup":
            self._by_slot.add(cmd_id)
            return Eject(cmd_id=cmd_id, issued_at=issued, expires_at=expires, slot=max(1, min(data, 256)))
        return Eject(cmd_id=cmd_id, issued_at=issued, expires_at=expires, bank_id=v.bank_id_of(data))

    async def wait_ack(self, msg_id: str, timeout_s: float = 2.0) -> ReturnAck | None:
        """Volinks answers no return: nothing to wait for."""
        await asyncio.sleep(0)
        return None

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"protocol": v.PROTOCOL, "commands": len(self.commands)}
