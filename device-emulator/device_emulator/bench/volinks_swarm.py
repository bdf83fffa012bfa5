"""A swarm cabinet of another maker: it speaks the volinks "Powerbank Protocol V1"
(contracts.vendors.volinks; docs/vendors/volinks.md) so `make bench BENCH_ARGS="--volinks N"` mixes vendors.

No will and no status: presence is its frames. On connect it uploads its 0x10 (the slots it holds, kept as
banks leave and come back) and answers `check` / `upload_all` the same way; `popup_sn` / `popup` are
answered with 0x31 / 0x21 after the swarm's motor delay (TTL expired: 0x88 state); a return is a 0x40
frame (volinks answers none: nothing to wait for); heartbeats are 0x7A frames on the heart topic, which carry
no device time, so the telemetry watch does not count them."""

from __future__ import annotations

import asyncio
import time
import uuid

from pydantic import ValidationError

from contracts.mqtt import Eject
from contracts.vendors import volinks as v
from device_emulator.bench.swarm import SwarmDevice
from kit.mqtt_client import LiteClient, MqttLiteError, Will


class VolinksSwarmDevice(SwarmDevice):
    watched = False

    def will(self) -> Will | None:
        return None

    async def connected(self, client: LiteClient) -> None:
        await client.subscribe(v.command_topic(self.device_id), qos=1)
        await client.publish(v.update_topic(self.device_id), self._status())

    def _status(self) -> bytes:
        holes = tuple(
            v.Hole(
                hole=slot,
                state=1 if bank else 0,
                current=0,
                voltage=0xEC if bank else 0,
                area=0,
                sn=(v.sn_of(bank) or 0) if bank else 0,
                soc=(self.battery.get(bank) or 80) if bank else 0,
                temperature_c=30 if bank else 0,
                charge_volt=0,
                charge_curr=0,
                soft_version=13 if bank else 0,
                sensor=0 if bank else 0x80,
            )
            for slot, bank in sorted(self.slots.items())
        )
        boards = tuple(
            v.Board(index=i + 1, temperature_c=0, soft_version=4, hard_version=0x16)
            for i in range(-(-len(holes) // v.HOLES_PER_BOARD))
        )
        return v.encode(v.StatusFrame(boards=boards, holes=holes))

    def _publish(self, topic: str, payload: bytes) -> None:
        client = self.client
        if client is not None and client.connected:
            try:
                client.publish_nowait(topic, payload)
            except MqttLiteError:
                self._swarm.stats.error("volinks publish failed")

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            command = v.VolinksCommand.model_validate_json(payload)
        except ValidationError:
            self._swarm.stats.error("invalid volinks command")
            return
        if command.cmd in ("check", "upload_all"):
            self._publish(v.update_topic(self.device_id), self._status())
            return
        data = int(command.data) if command.data is not None else 0
        issued = int(command.timestamp) * 1000 if command.timestamp else self.next_ts()
        expires = issued + (int(command.ttl) * 1000 if command.ttl else 3_600_000)
        bank_id: str | None
        if command.cmd == "popup_sn":
            bank_id = v.bank_id_of(data)
            slot = next((s for s, b in self.slots.items() if b == bank_id), None)
        else:
            slot = data if data in self.slots else None
            bank_id = self.slots.get(slot) if slot is not None else None
        eject = Eject(cmd_id=uuid.uuid4().hex, issued_at=issued, expires_at=expires, slot=slot, bank_id=bank_id)
        self._swarm.stats.ejects_seen += 1
        if self._swarm.on_eject is not None:
            self._swarm.on_eject(self.device_id, eject, now)
        asyncio.get_running_loop().call_later(self._swarm.motor_delay_s, self._answer, command.cmd, eject, data)

    def _answer(self, cmd: str, eject: Eject, data: int) -> None:
        expired = self.next_ts() > eject.expires_at
        ok = not expired and eject.slot is not None and eject.bank_id is not None
        if ok and eject.slot is not None:
            self.slots[eject.slot] = None
        frame: v.Frame
        if cmd == "popup_sn":
            state = v.PopupState.OK if ok else v.PopupState.TTL_EXPIRED if expired else v.PopupState.SN_NOT_FOUND
            frame = v.PopupSnFrame(hole=eject.slot or 0, sn=data, state=state, valve=6)
        else:
            frame = v.PopupSlotFrame(board=1, hole=eject.slot or data, state=int(ok), valve=2)
        self._publish(v.update_topic(self.device_id), v.encode(frame))

    def send_heartbeat(self) -> tuple[int, float] | None:
        client = self.client
        if client is None or not client.connected:
            return None
        frame = v.HeartbeatFrame(board=0x10, signal="CSQ:27;BP:0", csq=27, backup_power=0)
        try:
            client.publish_nowait(v.heart_topic(self.device_id), v.encode(frame))
        except MqttLiteError:
            return None
        return self.next_ts(), time.monotonic()

    async def return_bank(self, bank_id: str, slot: int, battery_pct: int | None = 80) -> tuple[str, float]:
        await asyncio.wait_for(self.online.wait(), 30)
        frame = v.ReturnFrame(
            board=1,
            hole=slot,
            area=0,
            sn=v.sn_of(bank_id) or 0,
            state=v.ReturnState.OK,
            bank_version=13,
            soc=battery_pct or 0,
        )
        sent_at = time.monotonic()
        self._publish(v.update_topic(self.device_id), v.encode(frame))
        self.slots[slot] = bank_id
        self.battery[bank_id] = battery_pct
        self._swarm.stats.returns_sent += 1
        return uuid.uuid4().hex, sent_at
