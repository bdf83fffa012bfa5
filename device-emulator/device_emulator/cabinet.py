"""One emulated cabinet: a station with slots holding power banks, speaking protocol v1 over MQTT.

Each cabinet is one asyncio task (the connection lifecycle of `device.Device`): connect, announce
(status, hello), then a receive loop that also times the heartbeat; reconnects with jittered
exponential back-off. Commands are handled inline, one at a time, like a cabinet with one controller.
Per-device state is a few small dicts and bounded deques, so thousands of cabinets fit in one process.
Faults: a stuck motor, lost eject results, ignored commands, a skewed clock, and the generic ones of
every device (lost, duplicated and delayed up messages).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiomqtt
from pydantic import ValidationError

from contracts.mqtt import (
    AdPlays,
    Eject,
    EjectResult,
    EjectResultCode,
    FirmwareReport,
    FirmwareUpdate,
    Heartbeat,
    Hello,
    Inventory,
    Light,
    Playlist,
    PlaylistItem,
    PlayReport,
    ReturnAck,
    ReturnReport,
    SlotAbnormal,
    SlotAbnormalKind,
    SlotFault,
    SlotState,
    down_message_adapter,
)
from device_emulator.device import Device, MessageFaults
from device_emulator.firmware import FirmwareFault, FirmwareUpdater, load_public_key

log = logging.getLogger("device_emulator.cabinet")

SlotLike = SlotState | Mapping[str, Any]
UpMsg = Hello | Heartbeat | Inventory | EjectResult | ReturnReport | SlotAbnormal | FirmwareReport | PlayReport
Queued = ReturnReport | SlotAbnormal | FirmwareReport | PlayReport  # kept while offline, sent on reconnect
PLAY_REPORT_S = 900.0  # a screen reports its play counts every 15 minutes
MAX_PLAY_COUNT_S = 86_400  # a count spans at most a day of device time (a clock jump counts nothing more)


class CabinetError(Exception):
    """Base of the emulator's own errors."""


class SlotUnavailable(CabinetError, ValueError):
    """A return cannot be placed: no free slot, the slot is taken or faulty, or the bank is already in."""


@dataclass(slots=True)
class Faults(MessageFaults):
    """Injected faults. `stuck_motor`: ejects answer motor_fault; `drop_acks`: ejects happen but no
    EjectResult is sent (repeats of the cmd_id neither, while the fault lasts); `silent`: eject commands are
    ignored entirely (not acted on, not remembered); and the generic `drop_messages`, `duplicate`,
    `delay_s` of every up message (see MessageFaults)."""

    stuck_motor: bool = False
    drop_acks: bool = False
    silent: bool = False


@dataclass(slots=True)
class _Slot:
    slot: int
    bank_id: str | None = None
    battery_pct: int | None = None
    locked: bool = True
    charging: bool = False
    fault: SlotFault | None = None

    def state(self) -> SlotState:
        return SlotState(
            slot=self.slot,
            bank_id=self.bank_id,
            battery_pct=self.battery_pct,
            locked=self.locked,
            charging=self.charging,
            fault=self.fault,
        )


def _as_slot_state(value: SlotLike) -> SlotState:
    return value if isinstance(value, SlotState) else SlotState.model_validate(dict(value))


def _bounded_put(mapping: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > limit:
        mapping.popitem(last=False)


class Cabinet(Device):
    """An emulated cabinet. `start()` runs it in the background until `stop()`."""

    kind = "cabinet"
    faults: Faults

    def __init__(
        self,
        cabinet_id: str,
        password: str,
        host: str,
        port: int,
        slots: Iterable[SlotLike],
        clock_skew_ms: int = 0,
        *,
        slot_count: int | None = None,
        firmware: str = "emu-1.0",
        model: str = "CAB-STD",
        firmware_key: bytes | None = None,
        lat: float | None = None,
        lon: float | None = None,
        heartbeat_s: float = 20.0,
        play_report_s: float = PLAY_REPORT_S,
        motor_delay_s: float = 0.03,
        keepalive_s: int = 30,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        op_timeout_s: float = 10.0,
        clean_session: bool = True,
        faults: Faults | None = None,
        rng: random.Random | None = None,
        history: int = 256,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            cabinet_id,
            password,
            host,
            port,
            clock_skew_ms=clock_skew_ms,
            keepalive_s=keepalive_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            op_timeout_s=op_timeout_s,
            clean_session=clean_session,
            rng=rng,
            tls=tls,
        )
        self.firmware = firmware
        self.model = model
        # The platform's public firmware key (PEM), carried from the factory: only images it signed install.
        self.updater = FirmwareUpdater(self, load_public_key(firmware_key) if firmware_key else None)
        self.lat = lat
        self.lon = lon
        self.heartbeat_s = heartbeat_s
        self.play_report_s = play_report_s
        self.motor_delay_s = motor_delay_s
        self.faults = faults or Faults()
        self._history = history

        states = sorted((_as_slot_state(s) for s in slots), key=lambda s: s.slot)
        self._slots: dict[int, _Slot] = {
            s.slot: _Slot(s.slot, s.bank_id, s.battery_pct, s.locked, s.charging, s.fault) for s in states
        }
        count = max(slot_count or 0, max(self._slots, default=0))
        if count < 1:
            raise ValueError("a cabinet needs at least one slot")
        for n in range(1, count + 1):
            self._slots.setdefault(n, _Slot(n))
        self._slots = dict(sorted(self._slots.items()))
        self.slot_count = count
        seen: set[str] = set()
        for s in self._slots.values():
            if s.bank_id is not None:
                if s.bank_id in seen:
                    raise ValueError(f"bank {s.bank_id} is in two slots of {cabinet_id}")
                seen.add(s.bank_id)

        # banks ejected here and not returned here since: id -> (battery % at eject, loop time of the eject)
        self._out: dict[str, tuple[int | None, float]] = {}
        self._results_by_cmd: OrderedDict[str, EjectResult] = OrderedDict()
        self._ack_futures: OrderedDict[str, asyncio.Future[ReturnAck]] = OrderedDict()
        self._pending_reports: deque[tuple[Queued, int]] = deque()
        self.results: deque[EjectResult] = deque(maxlen=history)  # every result decided (sent or dropped)
        self.acks: deque[ReturnAck] = deque(maxlen=history)  # every ReturnAck received
        self.stats |= {
            "commands": 0,
            "invalid_commands": 0,
            "ejects": 0,
            "results_sent": 0,
            "results_dropped": 0,
            "returns": 0,
        }
        self.light_on = False
        self.light_until: float | None = None
        self.playlist: Playlist | None = None  # what the screen plays (the newest version received)
        # Play counts since the last `plays` report: ad id -> turns begun; counted up to a device second.
        self._plays: dict[str, int] = {}
        self._plays_from_ms: int | None = None
        self._plays_counted_s: int | None = None
        self._next_play_report = time.monotonic() + play_report_s
        self.play_reports: deque[PlayReport] = deque(maxlen=history)  # every report made, for tests

    # ------------------------------------------------------------------ views

    @property
    def cabinet_id(self) -> str:
        return self.device_id

    def inventory(self) -> list[SlotState]:
        return [s.state() for s in self._slots.values()]

    def banks_out(self) -> dict[str, int | None]:
        """Banks ejected by this cabinet and not returned to it since: bank id -> battery % at eject."""
        return {bank: pct for bank, (pct, _) in self._out.items()}

    def out_since(self, bank_id: str) -> float | None:
        """When (`time.monotonic()`) this cabinet ejected `bank_id`, if it is still out from here."""
        entry = self._out.get(bank_id)
        return entry[1] if entry is not None else None

    def slot_of(self, bank_id: str) -> int | None:
        found = self._find(bank_id)
        return found.slot if found is not None else None

    def locate(self, bank_id: str) -> tuple[int, int | None] | None:
        """(slot, battery %) of a bank in this cabinet, or None."""
        found = self._find(bank_id)
        return (found.slot, found.battery_pct) if found is not None else None

    def _find(self, bank_id: str) -> _Slot | None:
        for s in self._slots.values():
            if s.bank_id == bank_id:
                return s
        return None

    @property
    def last_ack(self) -> ReturnAck | None:
        return self.acks[-1] if self.acks else None

    def ack_for(self, msg_id: str) -> ReturnAck | None:
        """The first ReturnAck received for a ReturnReport msg_id, if any (recent ones only)."""
        fut = self._ack_futures.get(msg_id)
        return fut.result() if fut is not None and fut.done() and not fut.cancelled() else None

    def tcp_nodelay(self) -> bool | None:
        """Whether TCP_NODELAY is set on the live MQTT socket (None when not connected)."""
        sock = self._raw_socket()
        if sock is None:
            return None
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def describe(self) -> dict[str, Any]:
        return {
            "cabinet_id": self.cabinet_id,
            "online": self.online,
            "firmware": self.firmware,
            "slot_count": self.slot_count,
            "lat": self.lat,
            "lon": self.lon,
            "clock_skew_ms": self.clock_skew_ms,
            "faults": asdict(self.faults),
            "slots": [s.model_dump(mode="json") for s in self.inventory()],
            "banks_out": sorted(self._out),
            "last_error": self.last_error,
            "night_light": self.night_light,
            "screen": self.screen(),
            "stats": dict(self.stats),
        }

    def set_faults(
        self,
        *,
        stuck_motor: bool | None = None,
        drop_acks: bool | None = None,
        silent: bool | None = None,
        clock_skew_ms: int | None = None,
        drop_messages: bool | None = None,
        duplicate: int | None = None,
        delay_s: float | None = None,
        firmware: str | None = None,
    ) -> None:
        """`firmware`: how the next updates fail (`corrupt`, `install`, `boot`; `none` clears it)."""
        self.faults.set(drop_messages=drop_messages, duplicate=duplicate, delay_s=delay_s)
        if firmware is not None:
            self.updater.fault = FirmwareFault(firmware)
        if stuck_motor is not None:
            self.faults.stuck_motor = stuck_motor
        if drop_acks is not None:
            self.faults.drop_acks = drop_acks
        if silent is not None:
            self.faults.silent = silent
        if clock_skew_ms is not None:
            self.clock_skew_ms = clock_skew_ms
        log.info("faults set", extra={"cabinet_id": self.cabinet_id, **asdict(self.faults), "skew": self.clock_skew_ms})

    # ------------------------------------------------------------------ connection (see Device)

    async def _hello(self, client: aiomqtt.Client) -> None:
        hello = Hello(
            msg_id=self.new_msg_id(),
            ts=self.device_now_ms(),
            firmware=self.firmware,
            slot_count=self.slot_count,
            slots=self.inventory(),
        )
        await self._publish_up(client, hello)
        await self._flush_pending(client)

    def _tick_start(self, now: float) -> float:
        return now + self.heartbeat_s

    async def _tick(self, client: aiomqtt.Client, now: float) -> float:
        beat = Heartbeat(msg_id=self.new_msg_id(), ts=self.device_now_ms(), rssi_dbm=self._rng.randint(-95, -50))
        await self._publish_up(client, beat)
        if now >= self._next_play_report:
            await self.report_plays()
        return now + self.heartbeat_s

    async def _flush_pending(self, client: aiomqtt.Client) -> None:
        while self._pending_reports:
            report, repeat = self._pending_reports[0]
            await self._publish_up(client, report, repeat)
            self._pending_reports.popleft()

    # ------------------------------------------------------------------ commands

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        payload = message.payload
        if payload == b"":  # a retained command cleared by the platform
            return
        try:
            if not isinstance(payload, str | bytes | bytearray):
                raise TypeError(f"unexpected payload type {type(payload).__name__}")
            down = down_message_adapter.validate_json(payload)
        except (ValidationError, TypeError) as exc:
            self.stats["invalid_commands"] += 1
            log.warning("invalid down message", extra={"cabinet_id": self.cabinet_id, "error": str(exc)[:300]})
            return
        if isinstance(down, ReturnAck):
            self._on_return_ack(down)
            return
        if isinstance(down, Light):
            self._on_light(down)
            return
        if isinstance(down, Playlist):
            self._on_playlist(down)
            return
        if isinstance(down, FirmwareUpdate):
            self.updater.handle(down)
            return
        if not isinstance(down, Eject):  # a bank's command (ring): not for a cabinet
            self.stats["invalid_commands"] += 1
            return
        self.stats["commands"] += 1
        if self.faults.silent:
            log.info("silent: command ignored", extra={"cabinet_id": self.cabinet_id, "cmd_id": down.cmd_id})
            return
        await self._on_eject(client, down)

    def _on_light(self, cmd: Light) -> None:
        """The night light (helps a phone camera scan in the dark); ignored once expired."""
        if self.device_now_ms() > cmd.expires_at:
            log.info("light command expired", extra={"cabinet_id": self.cabinet_id, "cmd_id": cmd.cmd_id})
            return
        self.light_on = cmd.on
        self.light_until = time.monotonic() + cmd.duration_s if cmd.on else None
        self.stats["light_commands"] = self.stats.get("light_commands", 0) + 1
        log.info("night light", extra={"cabinet_id": self.cabinet_id, "on": cmd.on, "duration_s": cmd.duration_s})

    def _on_playlist(self, playlist: Playlist) -> None:
        """The screen's ads: a newer version replaces the list (the retained one comes again on each connect)."""
        if self.playlist is not None and playlist.version <= self.playlist.version:
            return
        self.count_plays(self.device_now_ms())  # the turns of the old list so far
        self.playlist = playlist
        self.stats["playlists"] = self.stats.get("playlists", 0) + 1
        log.info(
            "screen playlist",
            extra={
                "cabinet_id": self.cabinet_id,
                "version": playlist.version,
                "ads": [i.title for i in playlist.items],
            },
        )

    def on_air(self) -> list[PlaylistItem]:
        """The playlist's items within their schedule by the cabinet's clock."""
        if self.playlist is None:
            return []
        now = self.device_now_ms()
        return [i for i in self.playlist.items if i.starts_at <= now < i.ends_at]

    def showing(self) -> PlaylistItem | None:
        """The item on the screen now: the items on air take turns, each for its `display_s`."""
        items = self.on_air()
        if not items:
            return None
        at = (self.device_now_ms() // 1000) % sum(i.display_s for i in items)
        for i in items:
            if at < i.display_s:
                return i
            at -= i.display_s
        return items[-1]

    def count_plays(self, now_ms: int) -> None:
        """Count the turns begun since the last count, second by second of device time, by the rotation `showing`
        follows: an item's turn begins where its place in the cycle of the items on air begins."""
        now_s = now_ms // 1000
        if self._plays_from_ms is None:
            self._plays_from_ms = now_ms
        counted = self._plays_counted_s
        if counted is not None and now_s <= counted:
            return  # counted that far already (never backwards)
        self._plays_counted_s = now_s
        if self.playlist is None or counted is None:
            return
        for second in range(max(counted + 1, now_s - MAX_PLAY_COUNT_S), now_s + 1):
            at_ms = second * 1000
            items = [i for i in self.playlist.items if i.starts_at <= at_ms < i.ends_at]
            if not items:
                continue
            place = second % sum(i.display_s for i in items)
            for item in items:
                if place == 0:
                    self._plays[item.ad_id] = self._plays.get(item.ad_id, 0) + 1
                    break
                place -= item.display_s
                if place < 0:
                    break

    async def report_plays(self) -> PlayReport | None:
        """Send what the screen played since the last report (`plays`); None when it played nothing. Sent now, or
        kept until the cabinet is connected again."""
        self._next_play_report = time.monotonic() + self.play_report_s
        now_ms = self.device_now_ms()
        self.count_plays(now_ms)
        if not self._plays or self.playlist is None:
            return None
        played = sorted(self._plays.items(), key=lambda kv: -kv[1])[:16]
        msg = PlayReport(
            msg_id=self.new_msg_id(),
            ts=now_ms,
            playlist_version=self.playlist.version,
            from_ts=min(self._plays_from_ms or now_ms, now_ms),
            items=[AdPlays(ad_id=ad_id, plays=n) for ad_id, n in played],
        )
        self._plays, self._plays_from_ms = {}, now_ms
        self.play_reports.append(msg)
        self.stats["play_reports"] = self.stats.get("play_reports", 0) + 1
        log.info(
            "screen plays reported",
            extra={"cabinet_id": self.cabinet_id, "plays": {i.ad_id: i.plays for i in msg.items}},
        )
        await self._publish_or_queue(msg, 1)
        return msg

    def screen(self) -> dict[str, Any]:
        """What the screen plays, as the control API shows it; every ad carries its "advertisement" label."""
        shown = self.showing()
        return {
            "version": self.playlist.version if self.playlist else None,
            "on_air": [
                {"ad_id": i.ad_id, "label": i.label, "advertiser": i.advertiser, "title": i.title}
                for i in self.on_air()
            ],
            "showing": None if shown is None else {"label": shown.label, "title": shown.title, "text": shown.text},
            "reports_sent": len(self.play_reports),
        }

    @property
    def night_light(self) -> bool:
        """Whether the night light is on now."""
        return self.light_on and (self.light_until is None or time.monotonic() < self.light_until)

    def _on_return_ack(self, ack: ReturnAck) -> None:
        self.acks.append(ack)
        fut = self._ack_future(ack.ref_msg_id)
        if not fut.done():
            fut.set_result(ack)
        log.info(
            "return ack", extra={"cabinet_id": self.cabinet_id, "ref_msg_id": ack.ref_msg_id, "result": ack.result}
        )

    def _ack_future(self, msg_id: str) -> asyncio.Future[ReturnAck]:
        fut = self._ack_futures.get(msg_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            _bounded_put(self._ack_futures, msg_id, fut, self._history)
        return fut

    async def _on_eject(self, client: aiomqtt.Client, cmd: Eject) -> None:
        first = self._results_by_cmd.get(cmd.cmd_id)
        if first is not None:
            # Same content and device time as the first answer; a fresh msg_id so that it is not dropped as
            # a transport replay (device-svc retried because it did not get the first one).
            log.info(
                "repeated cmd_id: re-sending the first result",
                extra={"cabinet_id": self.cabinet_id, "cmd_id": cmd.cmd_id},
            )
            await self._publish_result(client, first.model_copy(update={"msg_id": self.new_msg_id()}))
            return
        result = await self._decide_eject(cmd)
        _bounded_put(self._results_by_cmd, cmd.cmd_id, result, 4 * self._history)
        self.results.append(result)
        log.info(
            "eject",
            extra={
                "cabinet_id": self.cabinet_id,
                "cmd_id": cmd.cmd_id,
                "result": result.result,
                "slot": result.slot,
                "bank_id": result.bank_id,
                "platform_correlation_id": cmd.correlation_id,
            },
        )
        await self._publish_result(client, result)

    async def _publish_result(self, client: aiomqtt.Client, result: EjectResult) -> None:
        if self.faults.drop_acks:
            self.stats["results_dropped"] += 1
            return
        await self._publish_up(client, result)
        self.stats["results_sent"] += 1

    async def _decide_eject(self, cmd: Eject) -> EjectResult:
        def result(code: EjectResultCode, slot: _Slot | None = None, bank_id: str | None = None) -> EjectResult:
            return EjectResult(
                msg_id=self.new_msg_id(),
                ts=self.device_now_ms(),
                cmd_id=cmd.cmd_id,
                result=code,
                slot=slot.slot if slot is not None else cmd.slot,
                bank_id=bank_id if bank_id is not None else cmd.bank_id,
                traceparent=cmd.traceparent,  # echoed, as the protocol asks
            )

        if self.device_now_ms() > cmd.expires_at:
            return result(EjectResultCode.EXPIRED)
        if cmd.bank_id is None and cmd.slot is None:
            return result(EjectResultCode.FAILED)
        target: _Slot | None
        if cmd.bank_id is not None:
            target = self._find(cmd.bank_id)
            if target is not None and cmd.slot is not None and target.slot != cmd.slot:
                target = None
        else:
            assert cmd.slot is not None
            target = self._slots.get(cmd.slot)
        if target is None or target.bank_id is None:
            return result(EjectResultCode.BANK_NOT_PRESENT)
        bank_id = target.bank_id
        if target.fault is not None:
            return result(EjectResultCode.FAILED, target, bank_id)
        await asyncio.sleep(self.motor_delay_s)
        if self.faults.stuck_motor:
            return result(EjectResultCode.MOTOR_FAULT, target, bank_id)
        if target.bank_id != bank_id:  # changed under the motor (cannot happen today; keeps the rule local)
            return result(EjectResultCode.FAILED, target, bank_id)
        self._out[bank_id] = (target.battery_pct, time.monotonic())
        target.bank_id = None
        target.battery_pct = None
        target.charging = False
        self.stats["ejects"] += 1
        return result(EjectResultCode.OK, target, bank_id)

    # ------------------------------------------------------------------ device-initiated events

    async def return_bank(
        self,
        bank_id: str,
        slot: int | None = None,
        battery_pct: int | None = None,
        ts_offset_ms: int = 0,
        repeat: int = 1,
    ) -> str:
        """A user pushes `bank_id` into `slot` (or the first free one). Publishes the ReturnReport `repeat`
        times with the same msg_id (a QoS-1 redelivery); queued until reconnect when offline. Returns msg_id.
        The battery level defaults to the one the bank had when this cabinet ejected it."""
        if repeat < 1:
            raise ValueError("repeat must be >= 1")
        where = self.slot_of(bank_id)
        if where is not None:
            raise SlotUnavailable(f"bank {bank_id} is already in slot {where} of {self.cabinet_id}")
        if slot is None:
            target = next((s for s in self._slots.values() if s.bank_id is None and s.fault is None), None)
            if target is None:
                raise SlotUnavailable(f"{self.cabinet_id} has no free slot")
        else:
            found = self._slots.get(slot)
            if found is None:
                raise SlotUnavailable(f"{self.cabinet_id} has no slot {slot}")
            if found.bank_id is not None:
                raise SlotUnavailable(f"slot {slot} of {self.cabinet_id} holds {found.bank_id}")
            target = found
        pct = battery_pct if battery_pct is not None else self._out.get(bank_id, (None, 0.0))[0]
        report = ReturnReport(
            msg_id=self.new_msg_id(),
            ts=self.device_now_ms() + ts_offset_ms,
            slot=target.slot,
            bank_id=bank_id,
            battery_pct=pct,
        )
        self._out.pop(bank_id, None)
        target.bank_id = bank_id
        target.battery_pct = pct
        target.locked = True
        target.charging = pct is not None and pct < 100
        self.stats["returns"] += 1
        self._ack_future(report.msg_id)
        log.info(
            "return",
            extra={"cabinet_id": self.cabinet_id, "bank_id": bank_id, "slot": target.slot, "msg_id": report.msg_id},
        )
        await self._publish_or_queue(report, repeat)
        return report.msg_id

    async def wait_ack(self, msg_id: str, timeout_s: float = 2.0) -> ReturnAck | None:
        """The first ReturnAck for `msg_id`, waiting up to `timeout_s` seconds; None if none came."""
        fut = self._ack_future(msg_id)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            return None

    async def report_slot_abnormal(self, slot: int, kind: SlotAbnormalKind) -> str:
        if slot not in self._slots:
            raise SlotUnavailable(f"{self.cabinet_id} has no slot {slot}")
        if kind is SlotAbnormalKind.REMOVED_WITHOUT_UNLOCK:
            gone = self._slots[slot]
            gone.bank_id, gone.battery_pct, gone.charging = None, None, False
        msg = SlotAbnormal(msg_id=self.new_msg_id(), ts=self.device_now_ms(), slot=slot, kind=kind)
        await self._publish_or_queue(msg, 1)
        return msg.msg_id

    async def publish_inventory(self) -> str:
        msg = Inventory(msg_id=self.new_msg_id(), ts=self.device_now_ms(), slots=self.inventory())
        await self._publish_or_queue(msg, 1)
        return msg.msg_id

    async def publish_report(self, msg: FirmwareReport) -> None:
        """A firmware update's report: sent now, or kept until the cabinet is connected again."""
        await self._publish_or_queue(msg, 1)

    async def _publish_or_queue(self, msg: UpMsg, repeat: int) -> None:
        client = self._client
        if client is not None and self.online:
            try:
                await self._publish_up(client, msg, repeat)
                return
            except aiomqtt.MqttError as exc:
                log.warning(
                    "publish failed; queued for reconnect", extra={"cabinet_id": self.cabinet_id, "error": str(exc)}
                )
        if isinstance(msg, Queued):
            self._pending_reports.append((msg, repeat))
