"""Hotspots as pure rules: per H3 cell, demand (borrows, scans refused for lack of a bank) against supply
(rentable banks, free return slots); which cells are dry or full; which banks to move where. No I/O, so
a scenario is checked by hand (tests/test_hotspots.py)."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h3

from contracts.events import HotspotKind, RebalanceMove


@dataclass(frozen=True)
class HotspotRules:
    window_s: float = 3600.0  # demand is counted over this window, back from the evaluation
    min_demand: int = 3  # a cell is busy from this many borrows + refused scans in the window
    dry_max_banks: int = 1  # a busy cell is dry with this many rentable banks or fewer
    full_max_free: int = 1  # a cell is full with this many free return slots or fewer
    keep_banks: int = 2  # a cabinet that gives banks keeps at least this many rentable
    keep_free: int = 2  # a cabinet that takes banks keeps at least this many slots free
    target_free: int = 3  # a full cell is relieved down to this many free slots
    radius: int = 3  # cells this many H3 steps away (about 1.4 km at resolution 8) are neighbours


@dataclass(frozen=True)
class CabinetStock:
    cabinet_id: str
    cell: str
    division: str | None
    rentable: int
    present: int
    slots: int

    @property
    def free(self) -> int:
        return max(self.slots - self.present, 0)


@dataclass
class CellState:
    cell: str
    division: str | None = None
    borrows: int = 0
    refused: int = 0
    cabinets: list[CabinetStock] = field(default_factory=list)

    @property
    def demand(self) -> int:
        return self.borrows + self.refused

    @property
    def banks_available(self) -> int:
        return sum(c.rentable for c in self.cabinets)

    @property
    def free_slots(self) -> int:
        return sum(c.free for c in self.cabinets)

    @property
    def slots(self) -> int:
        return sum(c.slots for c in self.cabinets)


def cell_states(
    cabinets: Iterable[CabinetStock], borrows: dict[str, int], refused: dict[str, int]
) -> dict[str, CellState]:
    states: dict[str, CellState] = {}
    for cabinet in sorted(cabinets, key=lambda c: c.cabinet_id):
        state = states.setdefault(cabinet.cell, CellState(cabinet.cell, cabinet.division))
        state.cabinets.append(cabinet)
    for cell, n in borrows.items():
        states.setdefault(cell, CellState(cell)).borrows = n
    for cell, n in refused.items():
        states.setdefault(cell, CellState(cell)).refused = n
    return states


def conditions(state: CellState, rules: HotspotRules) -> set[HotspotKind]:
    """A cell without cabinets has no supply to balance (a siting question, not a hotspot)."""
    found: set[HotspotKind] = set()
    if state.slots == 0:
        return found
    if state.demand >= rules.min_demand and state.banks_available <= rules.dry_max_banks:
        found.add(HotspotKind.DRY)
    if state.free_slots <= rules.full_max_free:
        found.add(HotspotKind.FULL)
    return found


def grid_distance(a: str, b: str) -> int | None:
    try:
        return int(h3.grid_distance(a, b))
    except Exception:  # h3 refuses cells too far apart (or across pentagons): not neighbours anyway
        return None


def _neighbours(
    cell: str, states: dict[str, CellState], rules: HotspotRules, distance: Callable[[str, str], int | None]
) -> list[tuple[int, CellState]]:
    near = []
    for other in states.values():
        if other.cell == cell or not other.cabinets:
            continue
        d = distance(cell, other.cell)
        if d is not None and d <= rules.radius:
            near.append((d, other))
    return sorted(near, key=lambda pair: (pair[0], pair[1].cell))


def _match(sources: list[tuple[str, int]], targets: list[tuple[str, int]], need: int) -> list[RebalanceMove]:
    """Greedy: the first source's banks into the first target's room, and so on, until `need` is met."""
    moves: list[RebalanceMove] = []
    room = [(cid, n) for cid, n in targets if n > 0]
    t = 0
    for source_id, available in sources:
        while available > 0 and need > 0 and t < len(room):
            target_id, space = room[t]
            n = min(available, need, space)
            moves.append(RebalanceMove(from_cabinet_id=source_id, to_cabinet_id=target_id, banks=n))
            available, need = available - n, need - n
            room[t] = (target_id, space - n)
            if space == n:
                t += 1
        if need == 0 or t >= len(room):
            break
    return moves


def suggest(
    kind: HotspotKind,
    state: CellState,
    states: dict[str, CellState],
    rules: HotspotRules,
    distance: Callable[[str, str], int | None] = grid_distance,
) -> list[RebalanceMove]:
    """Dry: bring enough banks for the window's demand (as far as the cell's free slots take them) from
    the nearest cells' cabinets with banks to spare. Full: take banks out down to `target_free` free
    slots, into the nearest cells' cabinets with room."""
    near = _neighbours(state.cell, states, rules, distance)
    if kind is HotspotKind.DRY:
        need = min(state.demand - state.banks_available, state.free_slots)
        sources = [
            (c.cabinet_id, c.rentable - rules.keep_banks)
            for _, other in near
            if HotspotKind.DRY not in conditions(other, rules)
            for c in sorted(other.cabinets, key=lambda c: (-(c.rentable - rules.keep_banks), c.cabinet_id))
            if c.rentable > rules.keep_banks
        ]
        targets = [(c.cabinet_id, c.free) for c in sorted(state.cabinets, key=lambda c: (-c.free, c.cabinet_id))]
    else:
        need = rules.target_free - state.free_slots
        sources = [(c.cabinet_id, c.present) for c in sorted(state.cabinets, key=lambda c: (-c.present, c.cabinet_id))]
        targets = [
            (c.cabinet_id, c.free - rules.keep_free)
            for _, other in near
            if HotspotKind.FULL not in conditions(other, rules)
            for c in sorted(other.cabinets, key=lambda c: (-c.free, c.cabinet_id))
            if c.free > rules.keep_free
        ]
    if need <= 0:
        return []
    return _match(sources, targets, need)
