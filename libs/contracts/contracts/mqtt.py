"""The MQTT device protocol, version 1 (documented for device makers in docs/protocol.md).

Each device (cabinet or bank) connects with its own credentials; its MQTT username is its
device id, and the broker only lets it publish under `pb/v1/devices/<id>/up/...` and read
`pb/v1/devices/<id>/cmd`. Every payload is a JSON object discriminated by `type`.
Device times are epoch milliseconds (`ts`). QoS 1 everywhere; `status` is retained.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
)

from contracts.envelope import TRACEPARENT_PATTERN

PROTOCOL_VERSION = 1
TOPIC_ROOT = "pb/v1/devices"
MAX_PAYLOAD_BYTES = 16 * 1024

DeviceId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
EpochMs = Annotated[StrictInt, Field(ge=0, description="Device clock, milliseconds since the Unix epoch")]
Percent = Annotated[StrictInt, Field(ge=0, le=100)]
SlotNo = Annotated[StrictInt, Field(ge=1, le=256)]
Traceparent = Annotated[StrictStr, Field(pattern=TRACEPARENT_PATTERN, max_length=55)]


class UpChannel(StrEnum):
    HELLO = "hello"
    HEARTBEAT = "heartbeat"
    INVENTORY = "inventory"
    EJECT_RESULT = "eject_result"
    RETURN = "return"
    SLOT_ABNORMAL = "slot_abnormal"
    STATUS = "status"
    BANK_REPORT = "bank_report"
    FIRMWARE = "firmware"
    PLAYS = "plays"


def up_topic(device_id: str, channel: UpChannel) -> str:
    return f"{TOPIC_ROOT}/{device_id}/up/{channel.value}"


def cmd_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/cmd"


UP_SUBSCRIPTION = f"{TOPIC_ROOT}/+/up/#"


def parse_up_topic(topic: str) -> tuple[str, str] | None:
    """`pb/v1/devices/<id>/up/<channel>` -> (id, channel); anything else -> None."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != TOPIC_ROOT or parts[4] != "up":
        return None
    return parts[3], parts[5]


def _exactly_int(value: Any) -> Any:
    if type(value) is not int:  # JSON `true` equals 1 in Python; the protocol wants the number
        raise ValueError("the protocol version is the integer 1")
    return value


# Strict fields (issue 14): a device that sends `"online": "no"`, `"slot": "3"` or `"v": true` is refused
# and its message counted as rejected, never coerced. Enums are read from their JSON strings as usual.
Version = Annotated[Literal[1], BeforeValidator(_exactly_int)]


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Version = 1


class _UpMsg(_Msg):
    msg_id: StrictStr = Field(min_length=1, max_length=64, description="Unique per device; replays are dropped")
    ts: EpochMs


class SlotFault(StrEnum):
    BANK_ERROR = "bank_error"
    CABLE_FAULT = "cable_fault"
    SLOT_FAULT = "slot_fault"


class SlotState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slot: SlotNo
    bank_id: DeviceId | None = None
    battery_pct: Percent | None = None
    locked: StrictBool = True
    charging: StrictBool = False
    fault: SlotFault | None = None


class Hello(_UpMsg):
    """Sent on every (re)connect: firmware and the full inventory."""

    type: Literal["hello"] = "hello"
    firmware: StrictStr = Field(max_length=64)
    slot_count: StrictInt = Field(ge=1, le=256)
    slots: list[SlotState] = Field(max_length=256)


class Heartbeat(_UpMsg):
    type: Literal["heartbeat"] = "heartbeat"
    rssi_dbm: StrictInt | None = Field(default=None, ge=-150, le=0)


class Inventory(_UpMsg):
    type: Literal["inventory"] = "inventory"
    slots: list[SlotState] = Field(max_length=256)


class EjectResultCode(StrEnum):
    OK = "ok"
    FAILED = "failed"
    BANK_NOT_PRESENT = "bank_not_present"
    MOTOR_FAULT = "motor_fault"
    EXPIRED = "expired"
    TIMEOUT = "timeout"


class EjectResult(_UpMsg):
    type: Literal["eject_result"] = "eject_result"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    result: EjectResultCode
    slot: SlotNo | None = None
    bank_id: DeviceId | None = None
    traceparent: Traceparent | None = Field(
        default=None, description="The eject's `traceparent`, echoed unchanged when the command carried one"
    )


class ReturnReport(_UpMsg):
    """A bank was pushed into a slot and locked. `ts` is when it happened on the device."""

    type: Literal["return"] = "return"
    slot: SlotNo
    bank_id: DeviceId
    battery_pct: Percent | None = None


class SlotAbnormalKind(StrEnum):
    REMOVED_WITHOUT_UNLOCK = "removed_without_unlock"
    RETURN_WITHOUT_BANK = "return_without_bank"


class SlotAbnormal(_UpMsg):
    type: Literal["slot_abnormal"] = "slot_abnormal"
    slot: SlotNo
    kind: SlotAbnormalKind


class Status(_Msg):
    """Retained presence: `online: true` on connect, and the last will `online: false`."""

    type: Literal["status"] = "status"
    online: StrictBool


class Position(BaseModel):
    """A fix from the bank's own module (GNSS or cell/Wi-Fi location)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: StrictFloat = Field(ge=-90, le=90)
    lon: StrictFloat = Field(ge=-180, le=180)
    accuracy_m: StrictInt | None = Field(default=None, ge=0, le=100_000)


class BankAlarm(StrEnum):
    MOVED = "moved"  # the accelerometer saw movement since the previous report
    HIGH_TEMPERATURE = "high_temperature"
    LOW_BATTERY = "low_battery"


class BankReport(_UpMsg):
    """Sent by a bank with its own module (protocol v1.1): periodically (at least every 4 hours while
    not rented), on connect, and at once when it is moved or overheats. Every field but the common ones
    is optional: a module reports what it measured."""

    type: Literal["bank_report"] = "bank_report"
    position: Position | None = None
    battery_pct: Percent | None = None
    charging: StrictBool | None = None
    charge_mah_total: StrictInt | None = Field(default=None, ge=0, description="Energy charged in, lifetime")
    discharge_mah_total: StrictInt | None = Field(default=None, ge=0, description="Energy delivered, lifetime")
    charge_cycles: StrictInt | None = Field(default=None, ge=0, le=1_000_000)
    health_pct: Percent | None = Field(default=None, description="Capacity left, % of the rated capacity")
    temperature_c: StrictFloat | None = Field(default=None, ge=-60, le=150)
    moving: StrictBool = False
    alarms: list[BankAlarm] = Field(default_factory=list, max_length=8)


class FirmwareStage(StrEnum):
    """Where a cabinet is in a firmware update (docs/firmware.md). `done`, `failed` and `rolled_back` end it:
    `failed` installed nothing (the old firmware runs), `rolled_back` installed the image, did not boot
    healthy on it and went back to the old one."""

    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class FirmwareError(StrEnum):
    BUSY = "busy"  # a bank was moving: the cabinet does not start an update then
    EXPIRED = "expired"  # the command arrived after its `expires_at`
    WRONG_MODEL = "wrong_model"  # the image is for another model
    DOWNLOAD_FAILED = "download_failed"  # the link answered an error (expired, forged) or the transfer broke
    BAD_SIZE = "bad_size"
    BAD_CHECKSUM = "bad_checksum"
    BAD_SIGNATURE = "bad_signature"  # not signed by the platform's firmware key the device carries
    INSTALL_FAILED = "install_failed"
    BOOT_FAILED = "boot_failed"  # with `rolled_back`: the new firmware did not come up healthy


class FirmwareReport(_UpMsg):
    """Progress and result of a `firmware_update` (protocol v1 addition): one message per stage reached;
    `progress_pct` while downloading. A device answers a repeated `cmd_id` with its current stage."""

    type: Literal["firmware"] = "firmware"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    stage: FirmwareStage
    version: StrictStr = Field(min_length=1, max_length=64, description="The version being installed")
    progress_pct: Percent | None = None
    error: FirmwareError | None = None
    running_version: StrictStr | None = Field(
        default=None, max_length=64, description="The firmware the device runs after `done` / `rolled_back`"
    )


class AdPlays(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ad_id: StrictStr = Field(min_length=1, max_length=64, description="a `playlist` item's `ad_id`")
    plays: StrictInt = Field(ge=1, le=1_000_000, description="turns the ad was on the screen in the period")


class PlayReport(_UpMsg):
    """What a cabinet's screen played (protocol v1 addition; a cabinet without a screen, or an older one, never
    sends it): per ad of its playlist, the turns it was shown from `from_ts` to `ts` (device clock), only ads
    shown at least once. A cabinet reports at its own pace (every 15 minutes is typical) and keeps an unsent
    report until it is connected again; a report sent again with the same `msg_id` is counted once."""

    type: Literal["plays"] = "plays"
    playlist_version: StrictInt = Field(ge=1, description="the `playlist` version the screen played")
    from_ts: EpochMs
    items: list[AdPlays] = Field(min_length=1, max_length=16)


UpMessage = Annotated[
    Hello
    | Heartbeat
    | Inventory
    | EjectResult
    | ReturnReport
    | SlotAbnormal
    | Status
    | BankReport
    | FirmwareReport
    | PlayReport,
    Field(discriminator="type"),
]
up_message_adapter: TypeAdapter[UpMessage] = TypeAdapter(UpMessage)


class Eject(_Msg):
    """Eject a bank (by id) or a slot. A device must not act on it after `expires_at` (device
    clock) and must answer a repeated `cmd_id` with the first result without ejecting again."""

    type: Literal["eject"] = "eject"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    issued_at: EpochMs
    expires_at: EpochMs
    bank_id: DeviceId | None = None
    slot: SlotNo | None = None
    correlation_id: StrictStr | None = Field(
        default=None, max_length=64, description="The platform's trace id for this command, for device logs"
    )
    traceparent: Traceparent | None = Field(
        default=None,
        description="W3C trace context of the platform's span that sent it (when tracing is on); "
        "a device echoes it in its eject_result",
    )


class ReturnAckResult(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"
    UNKNOWN_BANK = "unknown_bank"
    SLOT_MISMATCH = "slot_mismatch"


class ReturnAck(_Msg):
    type: Literal["return_ack"] = "return_ack"
    ref_msg_id: StrictStr
    result: ReturnAckResult


class Ring(_Msg):
    """Make a bank with its own module beep (find it; deter a thief). Devices ignore it after
    `expires_at` and answer nothing."""

    type: Literal["ring"] = "ring"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    expires_at: EpochMs
    duration_s: StrictInt = Field(default=10, ge=1, le=300)


class Light(_Msg):
    """Switch a cabinet's night light (helps the camera scan a code in the dark)."""

    type: Literal["light"] = "light"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    expires_at: EpochMs
    on: StrictBool
    duration_s: StrictInt = Field(default=60, ge=1, le=3600)


class PlaylistItem(BaseModel):
    """One advertisement for the cabinet's screen. The screen shows `label` with it, always (an ad is never
    shown as anything but an advertisement), and plays it only between `starts_at` and `ends_at` by its
    own clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ad_id: StrictStr = Field(min_length=1, max_length=64)
    label: Literal["advertisement"] = "advertisement"
    advertiser: StrictStr = Field(max_length=100)
    title: StrictStr = Field(max_length=100)
    text: StrictStr = Field(max_length=200)
    media_url: StrictStr | None = Field(default=None, max_length=300)
    display_s: StrictInt = Field(ge=1, le=300, description="seconds on screen per turn")
    starts_at: EpochMs
    ends_at: EpochMs


class Playlist(_Msg):
    """What a cabinet with a screen plays (protocol v1 addition): the whole list, replacing the previous
    one; an empty list clears the screen. Sent retained on the command topic, so a cabinet gets the
    current one on every (re)connect; a higher `version` replaces a lower one. No answer. A cabinet
    without a screen ignores it (as any command type it does not support)."""

    type: Literal["playlist"] = "playlist"
    version: StrictInt = Field(ge=1)
    issued_at: EpochMs
    items: list[PlaylistItem] = Field(max_length=16)


Sha256Hex = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the image, lower-case hex")]


def firmware_signed_bytes(model: str, version: str, sha256_hex: str) -> bytes:
    """What the platform's firmware key signs (Ed25519) and a device verifies: model, version and the
    image's SHA-256, so a signature for one image cannot be replayed for another model or version."""
    return f"pb-firmware-v1\n{model}\n{version}\n{sha256_hex}".encode()


class FirmwareUpdate(_Msg):
    """Install a firmware image (protocol v1 addition; docs/firmware.md). The device downloads `url` over
    HTTP(S) before `expires_at` (the link itself expires then too), checks `size`, `sha256` and the Ed25519
    `signature` (base64) of `firmware_signed_bytes(model, version, sha256)` with the platform's public
    firmware key it carries, installs, reboots, and reports every stage on the `firmware` channel; a boot
    that is not healthy falls back to the old firmware (`rolled_back`). A cabinet of another model, or one
    whose banks are moving, answers `failed`. A repeated `cmd_id` never installs twice."""

    type: Literal["firmware_update"] = "firmware_update"
    cmd_id: StrictStr = Field(min_length=1, max_length=64)
    expires_at: EpochMs
    model: StrictStr = Field(min_length=1, max_length=50)
    version: StrictStr = Field(min_length=1, max_length=64)
    url: StrictStr = Field(min_length=1, max_length=1000)
    size: StrictInt = Field(ge=1)
    sha256: Sha256Hex
    signature: StrictStr = Field(min_length=1, max_length=200)


DownMessage = Annotated[Eject | ReturnAck | Ring | Light | Playlist | FirmwareUpdate, Field(discriminator="type")]
down_message_adapter: TypeAdapter[DownMessage] = TypeAdapter(DownMessage)
