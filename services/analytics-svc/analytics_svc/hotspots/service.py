"""Hotspot alerts (issue 11): a periodic evaluation of every cell; an alert is raised once when a busy
cell runs dry or a cell's cabinets are full, kept current (figures, suggested moves) while it holds, and
cleared once when it no longer does. Raised and cleared are events on `analytics.hotspots.v1`."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.hotspots import repository as repo
from analytics_svc.hotspots.rules import CellState, HotspotRules, cell_states, conditions, suggest
from contracts.events import EventData, HotspotCleared, HotspotKind, HotspotRaised, RebalanceMove

log = logging.getLogger(__name__)

Publish = Callable[[AsyncSession, EventData, str], Awaitable[Any]]


@dataclass(frozen=True)
class Evaluation:
    raised: int
    cleared: int
    open: int


async def current_cells(
    session: AsyncSession, rules: HotspotRules, now: datetime, region: str | None = None
) -> dict[str, CellState]:
    since = now - timedelta(seconds=rules.window_s)
    return cell_states(
        await repo.cabinet_stock(session, region),
        await repo.borrows_per_cell(session, since, now),
        await repo.refused_per_cell(session, since, now),
    )


def _figures(state: CellState, moves: list[RebalanceMove]) -> dict[str, Any]:
    return {
        "borrows": state.borrows,
        "refused": state.refused,
        "banks_available": state.banks_available,
        "free_slots": state.free_slots,
        "moves": [m.model_dump() for m in moves],
    }


async def evaluate(
    session: AsyncSession, publish: Publish, rules: HotspotRules, now: datetime | None = None
) -> Evaluation | None:
    """One evaluation of every cell; None when another replica is evaluating."""
    now = now or datetime.now(UTC)
    if not await repo.try_lock(session):
        return None
    states = await current_cells(session, rules, now)
    holding = {(cell, kind): state for cell, state in states.items() for kind in conditions(state, rules)}
    raised = cleared = 0
    for alert in await repo.open_alerts(session):
        key = (alert.cell, HotspotKind(alert.kind))
        state = holding.pop(key, None)
        if state is None:
            if await repo.clear_alert(session, alert.id, now):
                cleared += 1
                await publish(
                    session,
                    HotspotCleared(alert_id=alert.id, cell=alert.cell, kind=key[1], raised_at=alert.raised_at, at=now),
                    alert.cell,
                )
            continue
        for name, value in _figures(state, suggest(key[1], state, states, rules)).items():
            setattr(alert, name, value)
        alert.evaluated_at = now
    for (cell, kind), state in sorted(holding.items()):
        moves = suggest(kind, state, states, rules)
        alert_id = await repo.raise_alert(
            session,
            {
                "id": uuid.uuid4(),
                "cell": cell,
                "kind": kind.value,
                "division": state.division,
                "raised_at": now,
                "evaluated_at": now,
                **_figures(state, moves),
            },
        )
        if alert_id is None:
            continue
        raised += 1
        await publish(
            session,
            HotspotRaised(
                alert_id=alert_id,
                cell=cell,
                division=state.division,
                kind=kind,
                borrows=state.borrows,
                refused=state.refused,
                banks_available=state.banks_available,
                free_slots=state.free_slots,
                moves=moves[:100],
                at=now,
            ),
            cell,
        )
    await session.flush()
    if raised or cleared:
        log.info("hotspots evaluated", extra={"raised": raised, "cleared": cleared})
    return Evaluation(raised=raised, cleared=cleared, open=len(await repo.open_alerts(session)))
