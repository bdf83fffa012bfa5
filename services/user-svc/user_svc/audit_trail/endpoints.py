"""The platform's audit trail, for staff with `audit:read`: search and chain verification."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from kit.auth import Principal
from kit.db import SessionDep
from kit.inputs import UtcDatetime
from user_svc.admins.endpoints import admin_with
from user_svc.audit_trail import repository, service

router = APIRouter(prefix="/v1/admin/audit-trail", tags=["audit trail"])
AuditReader = Annotated[Principal, Depends(admin_with("audit:read"))]
Filter = Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class TrailEntryOut(BaseModel):
    seq: int
    event_id: UUID
    service: str
    actor_id: str
    actor_kind: str
    actor_roles: list[str]
    action: str
    target_type: str
    target_id: str
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    details: dict[str, Any]
    client_address: str | None
    correlation_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: str
    hash: str


class VerificationOut(BaseModel):
    ok: bool
    entries: int
    first_broken_seq: int | None
    head_hash: str


@router.get("")
async def search(
    _: AuditReader,
    session: SessionDep,
    actor_id: Filter = None,
    service_name: Annotated[str | None, Query(alias="service", max_length=40, pattern=r"^[a-z\-]+$")] = None,
    action: Filter = None,
    target_type: Filter = None,
    target_id: Filter = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[TrailEntryOut]:
    """Newest first. Every staff action of every service: who, what, target, before/after, from where,
    when, correlation id, and the entry's place in the hash chain."""
    rows = await repository.search(
        session,
        actor_id=actor_id,
        service=service_name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return [TrailEntryOut(**service.entry_out(r)) for r in rows]


@router.get("/verify")
async def verify(_: AuditReader, session: SessionDep) -> VerificationOut:
    """Recompute the hash chain from the first entry: `ok` false names the first entry that does not match."""
    result = await service.verify(session)
    return VerificationOut(
        ok=result.ok, entries=result.entries, first_broken_seq=result.first_broken_seq, head_hash=result.head_hash
    )
