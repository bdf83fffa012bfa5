"""Retention of the kit's bookkeeping tables, at a bounded cost per run (issue 14).

- `outbox`: a published row is history; it goes once older than the window. Batches walk the primary key
  from the oldest id, so a batch reads about what it deletes.
- `processed_events`: a `done` row is what makes a redelivered event a duplicate, so it stays for the
  window, which must be longer than any redelivery (the broker's retention, a consumer group's offsets
  reset to the earliest); then it goes, oldest first through its `processed_at` index. Parked (`failed`)
  rows stay until replayed.

Each batch is its own short transaction; a run stops after `max_batches`, the next run goes on.

A service's own deduplication tables (device-svc's `inbound_messages`) go the same way through
`prune_by_time`: oldest first through their time index."""

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work

log = logging.getLogger(__name__)

PRUNED = Counter("pb_retention_pruned_total", "Rows deleted by retention", ["table"])

_OUTBOX = text(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < :cutoff ORDER BY id LIMIT :batch)"
)
_PROCESSED = text(
    "DELETE FROM processed_events WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM processed_events "
    "WHERE processed_at < :cutoff AND status = 'done' ORDER BY processed_at LIMIT :batch)"
)


@dataclass(frozen=True)
class Pruned:
    outbox: int
    processed_events: int


async def prune(
    sessionmaker: async_sessionmaker[AsyncSession], *, older_than: datetime, batch: int = 5000, max_batches: int = 20
) -> Pruned:
    counts = {}
    for table, statement in (("outbox", _OUTBOX), ("processed_events", _PROCESSED)):
        total = 0
        for _ in range(max_batches):
            async with unit_of_work(sessionmaker) as session:
                deleted = (await session.execute(statement, {"cutoff": older_than, "batch": batch})).rowcount  # type: ignore[attr-defined]
            total += deleted
            if deleted < batch:
                break
        counts[table] = total
        PRUNED.labels(table).inc(total)
    if any(counts.values()):
        log.info("retention pruned", extra=counts)
    return Pruned(outbox=counts["outbox"], processed_events=counts["processed_events"])


@dataclass(frozen=True)
class TimeIndexed:
    """A table whose rows may go once `time_column` is older than a cutoff, walked through an index on it."""

    table: str
    key: tuple[str, ...]
    time_column: str

    def __post_init__(self) -> None:
        for name in (self.table, self.time_column, *self.key):
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"not a plain SQL name: {name!r}")

    def delete_statement(self) -> str:
        key = ", ".join(self.key)
        return (
            f"DELETE FROM {self.table} WHERE ({key}) IN (SELECT {key} FROM {self.table} "  # noqa: S608 (names checked)
            f"WHERE {self.time_column} < :cutoff ORDER BY {self.time_column} LIMIT :batch)"
        )


async def prune_by_time(
    sessionmaker: async_sessionmaker[AsyncSession],
    target: TimeIndexed,
    *,
    older_than: datetime,
    batch: int = 5000,
    max_batches: int = 20,
) -> int:
    """Delete `target`'s rows older than `older_than`, oldest first, `batch` rows per transaction, at most
    `max_batches` batches; how many went."""
    statement = text(target.delete_statement())
    total = 0
    for _ in range(max_batches):
        async with unit_of_work(sessionmaker) as session:
            deleted = (await session.execute(statement, {"cutoff": older_than, "batch": batch})).rowcount  # type: ignore[attr-defined]
        total += deleted
        if deleted < batch:
            break
    PRUNED.labels(target.table).inc(total)
    if total:
        log.info("retention pruned", extra={target.table: total})
    return total
