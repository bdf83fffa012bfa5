from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.events import FirmwareRolloutState, FirmwareUpdateState
from contracts.regions import DivisionCode

Model = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9._-]+$")]
Version = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class ImageOut(BaseModel):
    image_id: UUID
    model: str
    version: str
    size: int
    sha256: str
    signature: str = Field(description="Base64 Ed25519 signature of (model, version, sha256) by the platform key")
    notes: str
    uploaded_by: str
    created_at: datetime


class ImageList(BaseModel):
    items: list[ImageOut]


class RolloutIn(BaseModel):
    """Which cabinets: those of the image's model, in `region` (a division code: a province, city or district;
    none: everywhere), of which `percent` (chosen by a stable hash of the cabinet id, so a later, larger rollout
    takes the same cabinets first). At most `batch_size` update at once; the rollout halts when more than
    `max_failures` cabinets failed, or more than `max_failure_pct` % of those finished."""

    model_config = ConfigDict(extra="forbid")

    image_id: UUID
    percent: int = Field(default=100, ge=1, le=100)
    region: DivisionCode | None = None
    batch_size: int = Field(default=10, ge=1, le=1000)
    max_failures: int | None = Field(default=None, ge=0, le=100_000)
    max_failure_pct: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _a_threshold(self) -> "RolloutIn":
        if self.max_failures is None and self.max_failure_pct is None:
            self.max_failures = 0  # the first failure halts it unless told otherwise
        return self


class RolloutAct(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=300)


class UpdateOut(BaseModel):
    cabinet_id: str
    state: FirmwareUpdateState
    from_version: str | None
    progress_pct: int | None
    error: str | None
    sent_at: datetime | None
    updated_at: datetime


class RolloutOut(BaseModel):
    rollout_id: UUID
    image_id: UUID
    model: str
    version: str
    state: FirmwareRolloutState
    percent: int
    region: str | None
    batch_size: int
    max_failures: int | None
    max_failure_pct: int | None
    reason: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    counts: dict[FirmwareUpdateState, int] = Field(description="Cabinets per update state")
    cabinets: list[UpdateOut] = Field(default_factory=list, description="Per cabinet (the detail view only)")


class RolloutList(BaseModel):
    items: list[RolloutOut]
