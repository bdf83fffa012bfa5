"""Parked events: a consumer's event whose handler failed every attempt is kept in `processed_events`
(status `failed`, the last error, the envelope) and the consumer moves on. Staff see them per service and
replay them once the cause is fixed: every service serves this router (kit.app), and
`deploy/local/stack.py parked` lists or replays them on all services at once."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep
from kit.errors import NotFound
from kit.kafka import EventConsumer, ReplayOutcome

if TYPE_CHECKING:
    from kit.app import Runtime  # kit.app serves this router

router = APIRouter(prefix="/v1/admin/parked-events", tags=["parked events"])

EventsReader = Annotated[Principal, Depends(require_permission("events:read"))]
EventsReplayer = Annotated[Principal, Depends(require_permission("events:replay"))]
ConsumerName = Annotated[str, Field(min_length=1, max_length=100)]


class ParkedEventOut(BaseModel):
    consumer: str = Field(description="The consumer group that parked it")
    event_id: UUID
    event_type: str
    error: str | None
    parked_at: datetime
    replayable: bool = Field(description="False for events parked before the envelope was kept")


class ParkedEventsOut(BaseModel):
    service: str
    items: list[ParkedEventOut]


class ReplayOut(BaseModel):
    consumer: str
    event_id: UUID
    outcome: ReplayOutcome
    error: str | None = Field(default=None, description="When the handler failed again")


class UnknownConsumer(NotFound):
    code = "unknown_consumer"
    title = "This service has no such consumer"


class ParkedEventNotFound(NotFound):
    code = "parked_event_not_found"
    title = "No such parked event"


async def list_parked(session: AsyncSession, *, consumer: str | None, limit: int) -> list[ParkedEventOut]:
    rows = await session.execute(
        text(
            "SELECT consumer, event_id, event_type, error, processed_at, payload IS NOT NULL AS replayable "
            "FROM processed_events WHERE status = 'failed' AND (CAST(:c AS text) IS NULL OR consumer = :c) "
            "ORDER BY processed_at, consumer, event_id LIMIT :l"
        ),
        {"c": consumer, "l": limit},
    )
    return [
        ParkedEventOut(
            consumer=r.consumer,
            event_id=r.event_id,
            event_type=r.event_type,
            error=r.error,
            parked_at=r.processed_at,
            replayable=r.replayable,
        )
        for r in rows
    ]


def _runtime(request: Request) -> "Runtime":
    runtime: Runtime = request.app.state.runtime
    return runtime


def _consumer(runtime: "Runtime", group_id: str) -> EventConsumer:
    found = next((c for c in runtime.event_consumers if c.group_id == group_id), None)
    if found is None:
        raise UnknownConsumer(f"{runtime.settings.service_name} has no consumer {group_id!r}")
    return found


async def replay_one(runtime: "Runtime", group_id: str, event_id: UUID) -> ReplayOut:
    outcome = await _consumer(runtime, group_id).replay(event_id)
    error = None
    if outcome is ReplayOutcome.FAILED:
        async with runtime.sessionmaker() as session:
            error = (
                await session.execute(
                    text("SELECT error FROM processed_events WHERE consumer = :c AND event_id = :e"),
                    {"c": group_id, "e": event_id},
                )
            ).scalar_one_or_none()
    return ReplayOut(consumer=group_id, event_id=event_id, outcome=outcome, error=error)


@router.get("", response_model=ParkedEventsOut)
async def parked_events(
    _: EventsReader,
    session: ReadSessionDep,
    request: Request,
    consumer: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ParkedEventsOut:
    """This service's parked events, oldest first, with the error that parked each."""
    items = await list_parked(session, consumer=consumer, limit=limit)
    return ParkedEventsOut(service=_runtime(request).settings.service_name, items=items)


@router.post(
    "/{consumer}/{event_id}/replay",
    response_model=ReplayOut,
    dependencies=[audited("parked_event.replay", "parked_event", "event_id")],
)
async def replay_event(
    consumer: Annotated[str, ConsumerName], event_id: UUID, _: EventsReplayer, request: Request, audit: CurrentAudit
) -> ReplayOut:
    """Apply one parked event again (after the fix is deployed). `done`: applied; `failed`: still parked,
    with the new error; `no_payload`: parked before envelopes were kept, it cannot be replayed."""
    result = await replay_one(_runtime(request), consumer, event_id)
    if result.outcome is ReplayOutcome.NOT_PARKED:
        raise ParkedEventNotFound(f"{consumer} has no parked event {event_id}")
    audit.note(before={"status": "parked"}, after={"outcome": result.outcome.value}, consumer=consumer)
    return result


@router.post("/replay", response_model=list[ReplayOut], dependencies=[audited("parked_event.replay_all", "consumer")])
async def replay_all(
    _: EventsReplayer,
    request: Request,
    audit: CurrentAudit,
    consumer: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ReplayOut]:
    """Replay every parked event of this service (or of one consumer), oldest first, up to `limit`."""
    runtime = _runtime(request)
    async with runtime.sessionmaker() as session:
        parked = await list_parked(session, consumer=consumer, limit=limit)
    known = {c.group_id for c in runtime.event_consumers}
    results = [
        await replay_one(runtime, p.consumer, p.event_id) for p in parked if p.replayable and p.consumer in known
    ]
    audit.note(
        target_id=consumer or "",
        before={"parked": [str(p.event_id) for p in parked]},
        after={str(r.event_id): r.outcome.value for r in results},
    )
    return results
