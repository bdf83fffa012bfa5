"""Hotspot alerts and per-cell supply and demand, as the operations API answers them."""

import uuid

from pydantic import AwareDatetime, BaseModel

from contracts.events import HotspotKind, RebalanceMove


class AlertOut(BaseModel):
    id: uuid.UUID
    cell: str
    division: str | None
    kind: HotspotKind
    raised_at: AwareDatetime
    cleared_at: AwareDatetime | None
    evaluated_at: AwareDatetime
    borrows: int
    refused: int
    banks_available: int
    free_slots: int
    moves: list[RebalanceMove]


class AlertList(BaseModel):
    items: list[AlertOut]


class CellRow(BaseModel):
    cell: str
    division: str | None
    cabinets: int
    slots: int
    borrows: int
    refused: int
    demand: int
    banks_available: int
    free_slots: int
    dry: bool
    full: bool


class CellsOut(BaseModel):
    window_s: float
    at: AwareDatetime
    items: list[CellRow]


class AlertCsvRow(BaseModel):
    """An alert as a CSV row: the moves as text (`3 from CAB-B1 to CAB-A1; …`)."""

    id: uuid.UUID
    cell: str
    division: str | None
    kind: HotspotKind
    raised_at: AwareDatetime
    cleared_at: AwareDatetime | None
    borrows: int
    refused: int
    banks_available: int
    free_slots: int
    moves: str

    @classmethod
    def of(cls, alert: AlertOut) -> "AlertCsvRow":
        moves = "; ".join(f"{m.banks} from {m.from_cabinet_id} to {m.to_cabinet_id}" for m in alert.moves)
        return cls(**alert.model_dump(exclude={"moves", "evaluated_at"}), moves=moves)
