"""Registry administration: requests and responses (passwords appear once, in the response that
issued them)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kit.inputs import Latitude, Longitude, UtcDatetime

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CabinetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    name: str = Field(min_length=1, max_length=100)
    lat: Latitude
    lon: Longitude
    address: str = Field(default="", max_length=200)
    region: str = Field(default="", max_length=100)
    opening_hours: str = Field(default="00:00-24:00", max_length=100)
    slot_count: int = Field(ge=1, le=256)
    model: str = Field(
        default="CAB-STD",
        min_length=1,
        max_length=50,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The maker's model: what a firmware image targets (docs/firmware.md)",
    )
    protocol: Literal["native", "volinks"] = Field(
        default="native",
        description="The protocol it speaks: the platform's own, or a maker's translated by device-svc "
        "(docs/vendors.md); fixed once registered",
    )


class CabinetUpdate(BaseModel):
    """Operating data of a cabinet; omitted fields are left as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    lat: Latitude | None = None
    lon: Longitude | None = None
    address: str | None = Field(default=None, max_length=200)
    region: str | None = Field(default=None, max_length=100)
    opening_hours: str | None = Field(default=None, max_length=100)
    state: Literal["active", "maintenance"] | None = None


class CabinetOut(BaseModel):
    id: str
    name: str
    lat: float
    lon: float
    address: str
    region: str
    opening_hours: str
    state: str
    slot_count: int
    model: str
    protocol: str


class BankCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Id
    model: str = Field(default="PB-5000", min_length=1, max_length=50)
    capacity_mah: int = Field(default=5000, ge=100, le=100_000)
    qr_code: str | None = Field(default=None, min_length=1, max_length=128)
    nfc_uid: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$")
    ble_mac: str | None = Field(default=None, pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")
    in_service_at: UtcDatetime | None = None
    module: bool = Field(default=False, description="Has its own cellular module: issue it a credential")


class BankImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BankCreate] = Field(min_length=1, max_length=5000)


class CabinetImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CabinetCreate] = Field(min_length=1, max_length=5000)


class Credential(BaseModel):
    device_id: str
    password: str = Field(description="Shown once; the platform keeps only hashes")
    broker_version: int = Field(
        description="The registry's credentials version with this change; the answer waited (at most "
        "BROKER_SYNC_WAIT_S) for every live broker to apply it: GET /v1/admin/broker-auth shows each broker's"
    )


class Provisioned(BaseModel):
    id: str
    kind: str
    state: str
    credential: Credential | None = None


class ImportResult(BaseModel):
    created: list[Provisioned]
    skipped: list[str] = Field(description="ids already registered (left unchanged)")


class Revoked(BaseModel):
    device_id: str
    active: bool
    broker_version: int = Field(
        description="The registry's credentials version with this change; the answer waited (at most "
        "BROKER_SYNC_WAIT_S) for every live broker to apply it: GET /v1/admin/broker-auth shows each broker's"
    )


class BrokerAuthState(BaseModel):
    broker_id: str
    version: int = Field(description="The credentials version this broker's password file holds")
    devices: int
    synced_at: datetime
    live: bool = Field(description="Its sidecar reported within the last 90 s")


class BrokerAuthView(BaseModel):
    version: int = Field(description="The registry's credentials version now")
    brokers: list[BrokerAuthState]
