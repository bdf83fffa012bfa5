"""Communication status and operating state per region."""

from datetime import datetime

from pydantic import AwareDatetime, BaseModel


class StatusRow(BaseModel):
    division_code: str
    name: str
    kind: str
    devices: int
    online: int
    offline: int
    online_share: float | None
    never_heard: int
    silent: int
    seen_under_1h: int
    seen_1h_to_24h: int
    seen_1d_to_7d: int
    seen_over_7d: int
    empty: int
    full: int


class StatusOut(BaseModel):
    at: AwareDatetime
    silent_after_s: int
    rows: list[StatusRow]


class SilentRow(BaseModel):
    device_id: str
    kind: str
    division_code: str
    last_seen_at: datetime | None


class SilentOut(BaseModel):
    silent_after_s: int
    rows: list[SilentRow]
