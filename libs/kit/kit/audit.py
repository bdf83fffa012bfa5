"""One audit trail for every service (T/CA006-2018 6.3.1, issue 15): a staff action becomes a
`StaffActionRecorded` event in the service's outbox, in the same transaction as the action, so the
trail holds exactly what committed. user-svc consumes `audit.staff.v1` into its append-only,
hash-chained store (`/v1/admin/audit-trail`, `/v1/admin/audit-trail/verify`). The envelope carries
the service (producer), the correlation id and the time; the request's address comes from
`kit.correlation`."""

import copy
import enum
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, params
from sqlalchemy import BigInteger, SmallInteger, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from contracts import Envelope
from contracts.events import EventData, StaffActionRecorded
from kit.auth import CurrentPrincipal, Principal
from kit.correlation import get_client_address
from kit.db import SessionDep

log = logging.getLogger("kit.audit")

# A field whose name says it holds a secret is recorded as changed, never with its value.
SECRET_FIELD = re.compile(r"password|secret|token|credential|api_key|private_key|totp|hash", re.IGNORECASE)
MASKED = "***"


def mask_secrets(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`values` with every secret-named field's value replaced by `MASKED`, nested mappings included."""
    if values is None:
        return None
    return {
        k: MASKED if SECRET_FIELD.search(k) and v is not None else mask_secrets(v) if isinstance(v, Mapping) else v
        for k, v in values.items()
    }


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields that differ between two snapshots of a thing, as (old values, new values); a field only in
    one of them is None in the other."""
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


# The recorded state of an audited route's target, read in the request's transaction: once before the
# endpoint runs and once after it (the target id as the route knows it; None: no such target).
Snapshot = Callable[[AsyncSession, str], Awaitable[dict[str, Any] | None]]


def _plain(value: Any) -> Any:
    """A column value as the audit event carries it (JSON), copied so a later in-place change of the row
    cannot alter the recorded before."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return copy.deepcopy(value)


def row_state(model: type[DeclarativeBase], column: str | None = None, *, exclude: tuple[str, ...] = ()) -> Snapshot:
    """The `Snapshot` of a table's row found by `column` (default: its one-column primary key): every mapped
    column but `exclude`, values made plain. The after read refreshes the row from the database (after
    flushing the endpoint's pending changes), so an update issued as SQL is seen as well as one made on
    the mapped object."""
    mapper = sa_inspect(model)
    key = mapper.columns[column] if column else mapper.primary_key[0]
    assert column or len(mapper.primary_key) == 1, f"{model.__name__}: name the column to find the row by"
    python_type: type[Any] | None
    try:
        python_type = key.type.python_type
    except NotImplementedError:
        python_type = None
    names = [c.key for c in mapper.column_attrs if c.key not in exclude]
    # The path parameter is read here before the endpoint's own validation has refused a bad one: a value the
    # column cannot hold finds no row instead of failing the query (and the transaction).
    bits = 16 if isinstance(key.type, SmallInteger) else 64 if isinstance(key.type, BigInteger) else 32
    max_length = getattr(key.type, "length", None)

    async def snapshot(session: AsyncSession, target_id: str) -> dict[str, Any] | None:
        try:
            value: Any = python_type(target_id) if python_type in (uuid.UUID, int) else target_id
        except ValueError:
            return None  # not a valid id: the endpoint answers that; there is no row
        if isinstance(value, int) and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            return None
        if isinstance(value, str) and max_length is not None and len(value) > max_length:
            return None
        stmt = select(model).where(key == value).execution_options(populate_existing=True)
        row = (await session.execute(stmt)).scalars().first()
        return None if row is None else {name: _plain(getattr(row, name)) for name in names}

    snapshot.__qualname__ = f"row_state.{model.__name__}"
    return snapshot


class Publisher(Protocol):
    async def publish(self, session: AsyncSession, data: EventData, *, key: str) -> Envelope: ...


async def record_staff_action(
    session: AsyncSession,
    events: Publisher,
    actor: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    reason: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> Envelope:
    """`action` is `<target>.<verb>` (`bank.mark_faulty`); `before`/`after` the fields it changed (`changes`),
    secrets among them and in `details` masked."""
    return await events.publish(
        session,
        StaffActionRecorded(
            actor_id=actor.subject,
            actor_kind=actor.kind,
            actor_roles=sorted(actor.roles),
            action=action,
            target_type=target_type,
            target_id=str(target_id)[:128],
            reason=reason,
            before=mask_secrets(before),
            after=mask_secrets(after),
            details=mask_secrets(details) or {},
            client_address=get_client_address(),
            at=datetime.now(UTC),
        ),
        key=actor.subject,
    )


@dataclass
class StaffAudit:
    """What the route's audit entry will say; the endpoint may add to it (`CurrentAudit`)."""

    action: str
    target_type: str
    target_id: str = ""
    reason: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def note(
        self,
        *,
        target_id: object | None = None,
        reason: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        **details: Any,
    ) -> None:
        if target_id is not None:
            self.target_id = str(target_id)
        if reason is not None:
            self.reason = reason
        if before is not None:
            self.before = before
        if after is not None:
            self.after = after
        self.details.update(details)

    def changed(self, before: Mapping[str, Any], after: Mapping[str, Any], **details: Any) -> None:
        """Record the fields that differ between snapshots of the target taken before and after the change."""
        old, new = changes(before, after)
        self.note(before=old, after=new, **details)

    def created(self, target_id: object, after: Mapping[str, Any], **details: Any) -> None:
        """A new target (or a batch of them): nothing before, `after` what now exists."""
        self.note(target_id=target_id, before={}, after=dict(after), **details)

    @property
    def has_changes(self) -> bool:
        return self.before is not None or self.after is not None


def audited(
    action: str, target_type: str, target: str | None = None, *, state: Snapshot | None = None
) -> params.Depends:
    """A staff route that changes state declares this (`dependencies=[audited("bank.ring", "bank",
    "bank_id", state=row_state(Bank))]`): once the endpoint has returned, the audit entry is written into
    the outbox in the request's own transaction (the session commits after it), so the trail holds exactly
    what committed; a refused or failed request records nothing. `target` names the path parameter holding
    the target's id (a create names its new target with `CurrentAudit.note(target_id=...)`).

    Every entry says what changed (before and after; `tests/architecture` checks every route): with
    `state`, the target is read just before the endpoint runs and again after it, and the fields that
    differ are recorded (a create: before `{}`); without it, the endpoint records them itself through
    `CurrentAudit` (`changed`, `created`, or `note(before=..., after=...)`), for actions on many targets
    or on no row. An entry that still has neither is recorded with `changes_unrecorded` in its details
    and logged as an error, never dropped."""

    async def audited_route(request: Request, session: SessionDep, actor: CurrentPrincipal) -> AsyncIterator[None]:
        entry = StaffAudit(action, target_type, str(request.path_params.get(target, "")) if target else "")
        request.state.staff_audit = entry
        before = await state(session, entry.target_id) if state is not None and entry.target_id else None
        yield
        if state is not None and not entry.has_changes and entry.target_id:
            after = await state(session, entry.target_id)
            if before is None or after is None:  # created (or deleted): the whole row on its side
                entry.note(before=before or {}, after=after or {})
            else:
                entry.changed(before, after)
        if entry.has_changes:
            entry.before, entry.after = entry.before or {}, entry.after or {}
        else:
            log.error("audit_without_changes", extra={"action": entry.action, "target_id": entry.target_id})
            entry.details["changes_unrecorded"] = True
        await record_staff_action(
            session,
            request.app.state.runtime,
            actor,
            entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            reason=entry.reason,
            before=entry.before,
            after=entry.after,
            details=entry.details,
        )

    audited_route.state = state  # type: ignore[attr-defined]  # read by tests/architecture
    dependency: params.Depends = Depends(audited_route, scope="function")
    return dependency


def _current_audit(request: Request) -> StaffAudit:
    entry = getattr(request.state, "staff_audit", None)
    assert isinstance(entry, StaffAudit), "CurrentAudit is for routes declaring kit.audit.audited(...)"
    return entry


CurrentAudit = Annotated[StaffAudit, Depends(_current_audit)]
