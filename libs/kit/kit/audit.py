"""One audit trail for every service (T/CA006-2018 6.3.1, issue 15): a staff action becomes a
`StaffActionRecorded` event in the service's outbox, in the same transaction as the action, so the
trail holds exactly what committed. user-svc consumes `audit.staff.v1` into its append-only,
hash-chained store (`/v1/admin/audit-trail`, `/v1/admin/audit-trail/verify`). The envelope carries
the service (producer), the correlation id and the time; the request's address comes from
`kit.correlation`."""

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, params
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import EventData, StaffActionRecorded
from kit.auth import CurrentPrincipal, Principal
from kit.correlation import get_client_address
from kit.db import SessionDep

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


def audited(action: str, target_type: str, target: str | None = None) -> params.Depends:
    """A staff route that changes state declares this (`dependencies=[audited("bank.ring", "bank",
    "bank_id")]`): once the endpoint has returned, the audit entry is written into the outbox in the
    request's own transaction (the session commits after it), so the trail holds exactly what committed;
    a refused or failed request records nothing. `target` names the path parameter holding the target's
    id; the endpoint can set it and add before/after through `CurrentAudit`."""

    async def audited_route(request: Request, session: SessionDep, actor: CurrentPrincipal) -> AsyncIterator[None]:
        entry = StaffAudit(action, target_type, str(request.path_params.get(target, "")) if target else "")
        request.state.staff_audit = entry
        yield
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

    dependency: params.Depends = Depends(audited_route, scope="function")
    return dependency


def _current_audit(request: Request) -> StaffAudit:
    entry = getattr(request.state, "staff_audit", None)
    assert isinstance(entry, StaffAudit), "CurrentAudit is for routes declaring kit.audit.audited(...)"
    return entry


CurrentAudit = Annotated[StaffAudit, Depends(_current_audit)]
