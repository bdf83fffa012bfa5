"""The volinks "Powerbank Protocol V1" over MQTT: topics, the JSON commands a cabinet reads and the
binary frames it answers with. Written from the public documentation and two open-source kits; where
they disagree or are silent the decision is in docs/vendors/volinks.md (each marked "Decision" below).

A frame: `A8` head, a 2-byte big-endian length (the whole frame, head and check code included), a
command byte, the command's fields, and a check code that makes the sum of all bytes 0 modulo 256.
The decoder is strict: a frame whose head, length, check code, command or field layout is wrong
raises `FrameError` with a machine-readable reason, never a partial result."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

PROTOCOL = "volinks"
HEAD = 0xA8
MAX_FRAME_BYTES = 4096
SN_MAX = 0xFFFFFFFF
SN_UNREADABLE = 0xFFFFFFFF  # what a board reports when it cannot read a bank's SN
HOLES_PER_BOARD = 4  # Decision: the 0x10 layout has 4 positions per control board (doc example, Go kit)
BOARD_BYTES = 6
HOLE_BYTES = 15

_TOPIC = re.compile(r"^/powerbank/([A-Za-z0-9_-]{1,64})/user/(get|update|heart)$")
_HEX_TEXT = re.compile(rb"^(?:[0-9A-Fa-f]{2})+$")
_SIGNAL = re.compile(r"^CSQ:(\d{1,2})(?:;BP:(\d{1,3}))?$")
_BANK_ID = re.compile(r"^VL-(0|[1-9][0-9]{0,9})$")


def command_topic(device_id: str) -> str:
    return f"/powerbank/{device_id}/user/get"


def update_topic(device_id: str) -> str:
    return f"/powerbank/{device_id}/user/update"


def heart_topic(device_id: str) -> str:
    return f"/powerbank/{device_id}/user/heart"


UPDATE_SUBSCRIPTION = "/powerbank/+/user/update"
HEART_SUBSCRIPTION = "/powerbank/+/user/heart"


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`/powerbank/<id>/user/<get|update|heart>` -> (id, last level); anything else -> None."""
    match = _TOPIC.match(topic)
    return (match.group(1), match.group(2)) if match else None


def bank_id_of(sn: int) -> str:
    """Decision: a volinks bank's id in the platform is `VL-<SN in decimal>`, so ids of different
    makers never collide and the SN can be recovered from the id for `popup_sn`."""
    return f"VL-{sn}"


def sn_of(bank_id: str) -> int | None:
    match = _BANK_ID.match(bank_id)
    if match is None:
        return None
    sn = int(match.group(1))
    return sn if 0 < sn < SN_UNREADABLE else None


class Cmd(IntEnum):
    STATUS = 0x10  # cabinet information: the answer to `check` and `upload_all`
    POPUP_SLOT = 0x21  # result of `popup` (eject from a position)
    RETURN_SELF_TEST = 0x28  # return re-checked after an anti-theft switch failure
    POPUP_SN = 0x31  # result of `popup_sn` (eject a given bank)
    RETURN = 0x40  # a bank pushed into a position
    HEARTBEAT = 0x7A  # every ~9 minutes on the heart topic


class PopupState(IntEnum):
    """The `state` byte of 0x21 / 0x31 (the values the documentation lists for popup_sn)."""

    FAILED = 0x00
    OK = 0x01
    SERIAL_TIMEOUT = 0x11
    NOT_OUT_SN_READABLE = 0x12
    NO_TIMESTAMP = 0x87
    TTL_EXPIRED = 0x88
    NO_BANK_MEETS_RULES = 0xFB
    SN_NOT_FOUND = 0xFC
    TASK_QUEUE_FULL = 0xFD
    PREVIOUS_NOT_FINISHED = 0xFE
    COMMAND_UNPARSABLE = 0xFF


class ReturnState(IntEnum):
    FAILED = 0x00
    OK = 0x01
    NO_SN = 0x11
    NO_READINGS = 0x12
    NO_VERSIONS = 0x13
    LOCK_FAILED = 0x14
    NO_SN_MOTOR_FAILED = 0x21
    NO_READINGS_MOTOR_FAILED = 0x22
    LOCK_AND_MOTOR_FAILED = 0x23
    ANTI_THEFT_SWITCH_FAILED = 0x24  # a 0x28 self-test follows within 5 minutes


class FrameError(ValueError):
    """A frame that is not one: `reason` is a short code (counted per reason), `detail` for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Board:
    index: int
    temperature_c: int
    soft_version: int
    hard_version: int


@dataclass(frozen=True, slots=True)
class Hole:
    """One position as 0x10 reports it. `state` 0 is empty, 1 a bank; other values (undocumented) are
    read as a faulty position (Decision)."""

    hole: int
    state: int
    current: int  # tenths of an ampere
    voltage: int  # tenths of a volt
    area: int
    sn: int
    soc: int
    temperature_c: int
    charge_volt: int
    charge_curr: int
    soft_version: int
    sensor: int


@dataclass(frozen=True, slots=True)
class StatusFrame:
    boards: tuple[Board, ...]
    holes: tuple[Hole, ...]


@dataclass(frozen=True, slots=True)
class PopupSlotFrame:
    board: int
    hole: int
    state: int
    valve: int


@dataclass(frozen=True, slots=True)
class PopupSnFrame:
    hole: int
    sn: int
    state: int
    valve: int


@dataclass(frozen=True, slots=True)
class ReturnFrame:
    board: int
    hole: int
    area: int
    sn: int
    state: int
    bank_version: int
    soc: int


@dataclass(frozen=True, slots=True)
class ReturnSelfTestFrame:
    board: int
    hole: int
    state: int
    area: int
    sn: int
    soc: int
    temperature_c: int
    charge_volt: int
    charge_curr: int
    soft_version: int
    hard_version: int


@dataclass(frozen=True, slots=True)
class HeartbeatFrame:
    board: int
    signal: str
    csq: int  # 0-31, 99 = not known
    backup_power: int | None

    @property
    def rssi_dbm(self) -> int | None:
        """3GPP TS 27.007: CSQ n is -113 + 2n dBm; 99 means not known."""
        return None if self.csq == 99 else -113 + 2 * self.csq


Frame = StatusFrame | PopupSlotFrame | PopupSnFrame | ReturnFrame | ReturnSelfTestFrame | HeartbeatFrame


def check_code(body: bytes) -> int:
    """The "packet complement check": the byte that makes the sum of the whole frame 0 mod 256."""
    return (-sum(body)) & 0xFF


def _frame(cmd: Cmd, fields: bytes) -> bytes:
    length = 3 + 1 + len(fields) + 1
    body = bytes([HEAD]) + length.to_bytes(2, "big") + bytes([cmd]) + fields
    return body + bytes([check_code(body)])


def raw_frame(payload: bytes) -> bytes:
    """Decision: a frame arrives as binary (what both kits read); a payload of hexadecimal text (what the
    documentation prints) is accepted too. The two cannot be confused: a binary frame starts with 0xA8,
    which is not ASCII."""
    if payload[:1] != bytes([HEAD]) and _HEX_TEXT.match(payload):
        return bytes.fromhex(payload.decode("ascii"))
    return payload


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def decode(payload: bytes) -> Frame:
    frame = raw_frame(payload)
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError("oversized", f"{len(frame)} bytes")
    if len(frame) < 5:
        raise FrameError("truncated", f"{len(frame)} bytes")
    if frame[0] != HEAD:
        raise FrameError("bad_head", f"0x{frame[0]:02X}")
    length = int.from_bytes(frame[1:3], "big")
    if length != len(frame):
        raise FrameError("bad_length", f"length field {length}, frame {len(frame)} bytes")
    if sum(frame) & 0xFF:
        raise FrameError("bad_check_code", f"0x{frame[-1]:02X}, expected 0x{check_code(frame[:-1]):02X}")
    try:
        cmd = Cmd(frame[3])
    except ValueError:
        raise FrameError("unknown_command", f"0x{frame[3]:02X}") from None
    fields = frame[4:-1]
    decoded: Frame = _DECODERS[cmd](fields)
    return decoded


def _exact(fields: bytes, size: int, cmd: Cmd) -> None:
    if len(fields) != size:
        raise FrameError("bad_layout", f"0x{cmd:02X} carries {size} bytes of fields, got {len(fields)}")


def _hole_no(value: int) -> int:
    if value == 0:
        raise FrameError("bad_field", "position 0")
    return value


def _decode_status(fields: bytes) -> StatusFrame:
    per_board = BOARD_BYTES + HOLES_PER_BOARD * HOLE_BYTES
    if not fields or len(fields) % per_board:
        raise FrameError("bad_layout", f"0x10 fields of {len(fields)} bytes are not whole boards of {per_board}")
    boards: list[Board] = []
    holes: list[Hole] = []
    for start in range(0, len(fields), per_board):
        b = fields[start : start + BOARD_BYTES]
        boards.append(Board(index=b[0], temperature_c=b[3], soft_version=b[4], hard_version=b[5]))
        for n in range(HOLES_PER_BOARD):
            at = start + BOARD_BYTES + n * HOLE_BYTES
            r = fields[at : at + HOLE_BYTES]
            holes.append(
                Hole(
                    hole=_hole_no(r[0]),
                    state=r[1],
                    current=r[2],
                    voltage=r[3],
                    area=r[4],
                    sn=_u32(r, 5),
                    soc=r[9],
                    temperature_c=r[10],
                    charge_volt=r[11],
                    charge_curr=r[12],
                    soft_version=r[13],
                    sensor=r[14],
                )
            )
    numbers = [h.hole for h in holes]
    if len(set(numbers)) != len(numbers):
        raise FrameError("bad_field", "a position reported twice")
    for h in holes:
        if h.state == 1 and h.sn == 0:
            raise FrameError("bad_field", f"position {h.hole} holds a bank without SN")
    return StatusFrame(boards=tuple(boards), holes=tuple(holes))


def _decode_popup_slot(fields: bytes) -> PopupSlotFrame:
    _exact(fields, 4, Cmd.POPUP_SLOT)
    return PopupSlotFrame(board=fields[0], hole=_hole_no(fields[1]), state=fields[2], valve=fields[3])


def _decode_popup_sn(fields: bytes) -> PopupSnFrame:
    # Decision: the 12-byte layout of the documented example (position, SN, state, valve); the table
    # beside it numbers bytes that overlap (SN in 5-8, state in 6) and cannot be right.
    _exact(fields, 7, Cmd.POPUP_SN)
    return PopupSnFrame(hole=fields[0], sn=_u32(fields, 1), state=fields[5], valve=fields[6])


def _decode_return(fields: bytes) -> ReturnFrame:
    _exact(fields, 10, Cmd.RETURN)
    return ReturnFrame(
        board=fields[0],
        hole=_hole_no(fields[1]),
        area=fields[2],
        sn=_u32(fields, 3),
        state=fields[7],
        bank_version=fields[8],
        soc=fields[9],
    )


def _decode_return_self_test(fields: bytes) -> ReturnSelfTestFrame:
    _exact(fields, 16, Cmd.RETURN_SELF_TEST)
    return ReturnSelfTestFrame(
        board=fields[0],
        hole=_hole_no(fields[1]),
        state=fields[2],
        area=fields[5],
        sn=_u32(fields, 6),
        soc=fields[10],
        temperature_c=fields[11],
        charge_volt=fields[12],
        charge_curr=fields[13],
        soft_version=fields[14],
        hard_version=fields[15],
    )


def _decode_heartbeat(fields: bytes) -> HeartbeatFrame:
    if len(fields) < 2:
        raise FrameError("bad_layout", "0x7A without a signal")
    try:
        signal = fields[1:].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("bad_field", "signal is not ASCII") from None
    match = _SIGNAL.match(signal)
    if match is None:
        raise FrameError("bad_field", f"signal {signal[:40]!r}")
    csq = int(match.group(1))
    if not (0 <= csq <= 31 or csq == 99):
        raise FrameError("bad_field", f"CSQ {csq}")
    backup = int(match.group(2)) if match.group(2) is not None else None
    return HeartbeatFrame(board=fields[0], signal=signal, csq=csq, backup_power=backup)


_DECODERS: dict[Cmd, Callable[[bytes], Frame]] = {
    Cmd.STATUS: _decode_status,
    Cmd.POPUP_SLOT: _decode_popup_slot,
    Cmd.RETURN_SELF_TEST: _decode_return_self_test,
    Cmd.POPUP_SN: _decode_popup_sn,
    Cmd.RETURN: _decode_return,
    Cmd.HEARTBEAT: _decode_heartbeat,
}


def encode(frame: Frame) -> bytes:
    """The binary frame (the emulator's side; also the tests')."""
    if isinstance(frame, StatusFrame):
        by_board: dict[int, list[Hole]] = {}
        for i, hole in enumerate(frame.holes):
            by_board.setdefault(i // HOLES_PER_BOARD, []).append(hole)
        out = bytearray()
        for i, board in enumerate(frame.boards):
            out += bytes([board.index, 0xFF, 0xFF, board.temperature_c, board.soft_version, board.hard_version])
            for h in by_board.get(i, []):
                out += bytes([h.hole, h.state, h.current, h.voltage, h.area])
                out += h.sn.to_bytes(4, "big")
                out += bytes([h.soc, h.temperature_c, h.charge_volt, h.charge_curr, h.soft_version, h.sensor])
        return _frame(Cmd.STATUS, bytes(out))
    if isinstance(frame, PopupSlotFrame):
        return _frame(Cmd.POPUP_SLOT, bytes([frame.board, frame.hole, frame.state, frame.valve]))
    if isinstance(frame, PopupSnFrame):
        return _frame(
            Cmd.POPUP_SN, bytes([frame.hole]) + frame.sn.to_bytes(4, "big") + bytes([frame.state, frame.valve])
        )
    if isinstance(frame, ReturnFrame):
        return _frame(
            Cmd.RETURN,
            bytes([frame.board, frame.hole, frame.area])
            + frame.sn.to_bytes(4, "big")
            + bytes([frame.state, frame.bank_version, frame.soc]),
        )
    if isinstance(frame, ReturnSelfTestFrame):
        return _frame(
            Cmd.RETURN_SELF_TEST,
            bytes([frame.board, frame.hole, frame.state, 0, 0, frame.area])
            + frame.sn.to_bytes(4, "big")
            + bytes(
                [
                    frame.soc,
                    frame.temperature_c,
                    frame.charge_volt,
                    frame.charge_curr,
                    frame.soft_version,
                    frame.hard_version,
                ]
            ),
        )
    return _frame(Cmd.HEARTBEAT, bytes([frame.board]) + frame.signal.encode("ascii"))


# ---------------------------------------------------------------------------------------- commands


class VolinksCommand(BaseModel):
    """A JSON command on `/powerbank/<id>/user/get`. Every value is a string, as documented.
    `timestamp` (epoch seconds) and `ttl` (seconds): a cabinet drops an eject older than
    timestamp + ttl and answers 0x88."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd: Literal["check", "upload_all", "popup_sn", "popup"]
    data: StrictStr | None = Field(default=None, pattern=r"^[0-9]{1,10}$")
    io: Literal["0", "1"] | None = None
    timestamp: StrictStr | None = Field(default=None, pattern=r"^[0-9]{1,12}$")
    ttl: StrictStr | None = Field(default=None, pattern=r"^[0-9]{1,6}$")


def popup_sn(sn: int, timestamp_s: int, ttl_s: int) -> VolinksCommand:
    return VolinksCommand(cmd="popup_sn", data=str(sn), timestamp=str(timestamp_s), ttl=str(ttl_s))


def popup_slot(slot: int, timestamp_s: int, ttl_s: int) -> VolinksCommand:
    return VolinksCommand(cmd="popup", data=str(slot), io="0", timestamp=str(timestamp_s), ttl=str(ttl_s))


def check() -> VolinksCommand:
    return VolinksCommand(cmd="check")


def command_bytes(command: VolinksCommand) -> bytes:
    return command.model_dump_json(exclude_none=True).encode()
