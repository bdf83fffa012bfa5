"""Events of analytics-svc: hotspot alerts with their rebalancing suggestions."""

from enum import StrEnum
from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events._base import _Data
from contracts.topics import Topic


class HotspotKind(StrEnum):
    DRY = "dry"  # a busy cell's cabinets ran out of rentable banks
    FULL = "full"  # a cell's cabinets have (almost) no free return slot


class RebalanceMove(_Data):
    """Move `banks` banks from one cabinet to another (a suggestion for operations)."""

    from_cabinet_id: str = Field(max_length=64)
    to_cabinet_id: str = Field(max_length=64)
    banks: int = Field(ge=1)


class HotspotRaised(_Data):
    """A cell (H3, resolution 8) ran dry or full; raised once until it is cleared. Demand is counted over
    the evaluation window: borrows started there and scans refused for lack of a rentable bank."""

    type: Literal["analytics.hotspot.raised"] = "analytics.hotspot.raised"
    alert_id: UUID
    cell: str = Field(max_length=16)
    division: str | None = Field(default=None, max_length=6)
    kind: HotspotKind
    borrows: int = Field(ge=0)
    refused: int = Field(ge=0)
    banks_available: int = Field(ge=0)
    free_slots: int = Field(ge=0)
    moves: list[RebalanceMove] = Field(default_factory=list, max_length=100)
    at: AwareDatetime


class HotspotCleared(_Data):
    """The condition of a raised hotspot no longer holds (once per alert)."""

    type: Literal["analytics.hotspot.cleared"] = "analytics.hotspot.cleared"
    alert_id: UUID
    cell: str = Field(max_length=16)
    kind: HotspotKind
    raised_at: AwareDatetime
    at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = HotspotRaised | HotspotCleared

TOPICS: dict[str, Topic] = {
    "analytics.hotspot.raised": Topic.HOTSPOTS,
    "analytics.hotspot.cleared": Topic.HOTSPOTS,
}
