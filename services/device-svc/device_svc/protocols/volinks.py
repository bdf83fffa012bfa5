"""The volinks "Powerbank Protocol V1" adapter (wire format: contracts.vendors.volinks; decisions where
the public sources disagree: docs/vendors/volinks.md).

Up: `/powerbank/<id>/user/update` (binary frames: 0x10 status, 0x21 / 0x31 eject results, 0x40 return,
0x28 return self-test) is read on the critical intake, `/powerbank/<id>/user/heart` (0x7A) on the
telemetry intake. The frames carry neither a message id nor a device time: each translated message gets
a fresh msg_id and the arrival time (a return ends its rental when it reaches us, at most a network
delay after the bank was locked), and repeats are caught by the platform's state (a return of a bank
already in that slot is a duplicate; an answer to an eject already final is late). An eject result names
no command: it is matched to the newest eject still waiting at that cabinet for that bank (0x31) or
slot (0x21).

Down: `eject` becomes `popup_sn` (or `popup` by slot for a bank id that is no volinks SN) with
`timestamp` and `ttl` from the command's issue and expiry times. Volinks has no return answer, light
or ring: those are not sent. A cabinet heard from after a silence without its 0x10 is asked `check`."""

import math
import uuid
from collections.abc import Mapping
from datetime import datetime

from contracts.mqtt import (
    DownMessage,
    Eject,
    EjectResult,
    EjectResultCode,
    Heartbeat,
    Hello,
    ReturnReport,
    SlotAbnormal,
    SlotAbnormalKind,
    SlotFault,
    SlotState,
    UpMessage,
)
from contracts.vendors import volinks as v
from device_svc.clock import datetime_to_ms
from device_svc.metrics import VENDOR_FRAMES
from device_svc.protocols.base import AdapterRejected, Lookup, Outgoing, ProtocolAdapter

POPUP_RESULTS: Mapping[int, EjectResultCode] = {
    v.PopupState.OK: EjectResultCode.OK,
    v.PopupState.TTL_EXPIRED: EjectResultCode.EXPIRED,
    v.PopupState.SN_NOT_FOUND: EjectResultCode.BANK_NOT_PRESENT,
    v.PopupState.NOT_OUT_SN_READABLE: EjectResultCode.MOTOR_FAULT,
}
# Above the documented 9 minutes between heartbeats: two missed and a margin.
OFFLINE_AFTER_S = 1500.0


def _battery(soc: int) -> int:
    """Decision: the byte runs to 255 (the documentation's "0xFF: 255%"); above 100 is read as full."""
    return min(soc, 100)


def _bank(sn: int) -> str | None:
    return v.bank_id_of(sn) if 0 < sn < v.SN_UNREADABLE else None


def _slot(hole: v.Hole) -> SlotState:
    bank_id = _bank(hole.sn) if hole.state != 0 else None
    fault: SlotFault | None = None
    if hole.state not in (0, 1):
        fault = SlotFault.BANK_ERROR if bank_id is not None else SlotFault.SLOT_FAULT
    elif hole.state == 1 and bank_id is None:
        fault = SlotFault.BANK_ERROR  # a bank whose SN cannot be read
    return SlotState(
        slot=hole.hole,
        bank_id=bank_id,
        battery_pct=_battery(hole.soc) if bank_id is not None else None,
        charging=bank_id is not None and hole.charge_curr > 0,
        fault=fault,
    )


class VolinksAdapter(ProtocolAdapter):
    name = v.PROTOCOL
    offline_after_s = OFFLINE_AFTER_S
    carries = frozenset({"eject"})

    def subscriptions(self) -> Mapping[str, tuple[str, ...]]:
        return {"critical": (v.UPDATE_SUBSCRIPTION,), "telemetry": (v.HEART_SUBSCRIPTION,)}

    def route(self, topic: str) -> tuple[str, str] | None:
        parsed = v.parse_topic(topic)
        if parsed is None or parsed[1] == "get":
            return None
        return parsed[0], "telemetry" if parsed[1] == "heart" else "critical"

    async def decode(
        self, device_id: str, topic: str, payload: bytes, received_at: datetime, lookup: Lookup
    ) -> list[UpMessage]:
        registered = await lookup.protocol_of(device_id)
        if registered is None:
            raise AdapterRejected("unknown_device", device_id)
        if registered != self.name:
            raise AdapterRejected("protocol_mismatch", f"{device_id} is registered as {registered}")
        try:
            frame = v.decode(payload)
        except v.FrameError as exc:
            VENDOR_FRAMES.labels(self.name, exc.reason).inc()
            raise AdapterRejected("malformed_frame", f"{exc.reason}: {exc.detail}; {payload[:64].hex()}") from None
        VENDOR_FRAMES.labels(self.name, "ok").inc()
        heart = topic.endswith("/heart")
        if heart != isinstance(frame, v.HeartbeatFrame):
            raise AdapterRejected("malformed_frame", f"a 0x{_cmd(frame):02X} frame on {topic.rsplit('/', 1)[-1]}")
        ts = datetime_to_ms(received_at)
        msg_id = uuid.uuid4().hex
        if isinstance(frame, v.HeartbeatFrame):
            return [Heartbeat(msg_id=msg_id, ts=ts, rssi_dbm=frame.rssi_dbm)]
        if isinstance(frame, v.StatusFrame):
            return [self._hello(frame, msg_id, ts)]
        if isinstance(frame, v.PopupSnFrame):
            bank_id = _bank(frame.sn)
            cmd_id = await lookup.pending_eject(device_id, bank_id, None) if bank_id else None
            result = POPUP_RESULTS.get(frame.state, EjectResultCode.FAILED)
            slot = frame.hole if 0 < frame.hole <= 256 else None
            return [
                EjectResult(
                    msg_id=msg_id, ts=ts, cmd_id=cmd_id or _no_command(), result=result, slot=slot, bank_id=bank_id
                )
            ]
        if isinstance(frame, v.PopupSlotFrame):
            cmd_id = await lookup.pending_eject(device_id, None, frame.hole)
            result = EjectResultCode.OK if frame.state == v.PopupState.OK else EjectResultCode.FAILED
            return [EjectResult(msg_id=msg_id, ts=ts, cmd_id=cmd_id or _no_command(), result=result, slot=frame.hole)]
        # a return (0x40) or its self-test (0x28)
        bank_id = _bank(frame.sn)
        if frame.state == v.ReturnState.OK and bank_id is not None and frame.hole <= 256:
            return [
                ReturnReport(msg_id=msg_id, ts=ts, slot=frame.hole, bank_id=bank_id, battery_pct=_battery(frame.soc))
            ]
        if frame.hole > 256:
            raise AdapterRejected("malformed_frame", f"position {frame.hole}")
        return [SlotAbnormal(msg_id=msg_id, ts=ts, slot=frame.hole, kind=SlotAbnormalKind.RETURN_WITHOUT_BANK)]

    @staticmethod
    def _hello(frame: v.StatusFrame, msg_id: str, ts: int) -> Hello:
        if max(h.hole for h in frame.holes) > 256:
            raise AdapterRejected("malformed_frame", "a position above 256")
        board = frame.boards[0]
        return Hello(
            msg_id=msg_id,
            ts=ts,
            firmware=f"volinks-{board.soft_version}.{board.hard_version}",
            slot_count=max(h.hole for h in frame.holes),
            slots=[_slot(h) for h in frame.holes],
        )

    def encode(self, device_id: str, message: DownMessage) -> Outgoing | None:
        if not isinstance(message, Eject):
            return None
        timestamp_s = message.issued_at // 1000
        ttl_s = max(1, math.ceil((message.expires_at - message.issued_at) / 1000))
        sn = v.sn_of(message.bank_id) if message.bank_id is not None else None
        if sn is not None:
            command = v.popup_sn(sn, timestamp_s, ttl_s)
        elif message.slot is not None:
            command = v.popup_slot(message.slot, timestamp_s, ttl_s)
        else:
            return None
        return Outgoing(v.command_topic(device_id), v.command_bytes(command))

    def state_query(self, device_id: str) -> Outgoing | None:
        """`check`: answered with a 0x10 status frame (decision 9 of docs/vendors/volinks.md)."""
        return Outgoing(v.command_topic(device_id), v.command_bytes(v.check()))


def _cmd(frame: v.Frame) -> int:
    kinds: dict[type, v.Cmd] = {
        v.StatusFrame: v.Cmd.STATUS,
        v.PopupSlotFrame: v.Cmd.POPUP_SLOT,
        v.PopupSnFrame: v.Cmd.POPUP_SN,
        v.ReturnFrame: v.Cmd.RETURN,
        v.ReturnSelfTestFrame: v.Cmd.RETURN_SELF_TEST,
        v.HeartbeatFrame: v.Cmd.HEARTBEAT,
    }
    return int(kinds[type(frame)])


def _no_command() -> str:
    """An answer no waiting eject matches (late, or for a command of another platform): a cmd_id that
    matches nothing, so the eject service counts it as unmatched."""
    return str(uuid.uuid4())
