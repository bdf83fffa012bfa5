"""The platform's audit trail (T/CA006-2018 6.3.1, issue 15): every service's staff actions arrive as
`audit.staff_action.recorded` events (kit.audit, through each service's outbox) and are appended here
in one hash chain. Entry n's hash is SHA-256 over entry n-1's hash and entry n's canonical content
(sorted-key JSON), so changing, removing or inserting an entry breaks the chain from there on;
`verify` recomputes it. UPDATE and DELETE are refused by a trigger."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import StaffActionRecorded
from user_svc.audit_trail import repository
from user_svc.models import StaffAuditEntry

GENESIS = "0" * 64
_FIELDS = (
    "seq",
    "event_id",
    "service",
    "actor_id",
    "actor_kind",
    "actor_roles",
    "action",
    "target_type",
    "target_id",
    "reason",
    "before",
    "after",
    "details",
    "client_address",
    "correlation_id",
    "occurred_at",
)


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value) if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else value


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    body = json.dumps(
        {k: _canonical(content[k]) for k in _FIELDS}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256((prev_hash + "\n" + body).encode()).hexdigest()


async def append(session: AsyncSession, envelope: Envelope) -> None:
    """Append one event to the chain; a redelivered event is already there and is skipped."""
    data = envelope.data
    assert isinstance(data, StaffActionRecorded)
    await repository.lock_chain(session)
    if await repository.exists(session, envelope.event_id):
        return
    last = await repository.head(session)
    seq, prev_hash = (last[0] + 1, last[1]) if last is not None else (1, GENESIS)
    content: dict[str, Any] = {
        "seq": seq,
        "event_id": envelope.event_id,
        "service": envelope.producer,
        "actor_id": data.actor_id,
        "actor_kind": data.actor_kind,
        "actor_roles": list(data.actor_roles),
        "action": data.action,
        "target_type": data.target_type,
        "target_id": data.target_id,
        "reason": data.reason,
        "before": data.before,
        "after": data.after,
        "details": data.details,
        "client_address": data.client_address,
        "correlation_id": envelope.correlation_id,
        "occurred_at": data.at,
    }
    await repository.append(session, {**content, "prev_hash": prev_hash, "hash": entry_hash(prev_hash, content)})


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_broken_seq: int | None
    head_hash: str


async def verify(session: AsyncSession) -> Verification:
    prev_hash, count, expected_seq = GENESIS, 0, 1
    async for row in repository.in_order(session):
        content = {k: getattr(row, k) for k in _FIELDS}
        if row.seq != expected_seq or row.prev_hash != prev_hash or row.hash != entry_hash(prev_hash, content):
            return Verification(ok=False, entries=count, first_broken_seq=row.seq, head_hash=prev_hash)
        prev_hash, count, expected_seq = row.hash, count + 1, row.seq + 1
    return Verification(ok=True, entries=count, first_broken_seq=None, head_hash=prev_hash)


def entry_out(row: StaffAuditEntry) -> dict[str, Any]:
    return {k: getattr(row, k) for k in (*_FIELDS, "recorded_at", "prev_hash", "hash")}
