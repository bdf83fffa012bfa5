"""One audit trail for every service (T/CA006-2018 6.3.1, issue 15): a staff action becomes a
`StaffActionRecorded` event in the service's outbox, in the same transaction as the action, so the
trail holds exactly what committed. user-svc consumes `audit.staff.v1` into its append-only,
hash-chained store (`/v1/admin/audit-trail`, `/v1/admin/audit-trail/verify`). The envelope carries
the service (producer), the correlation id and the time; the request's address comes from
`kit.correlation`."""

from collections.abc import AsyncIterator
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
    """`action` is `<target>.<verb>` (`bank.mark_faulty`); `before`/`after` the fields it changed."""
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
            before=before,
            after=after,
            details=details or {},
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
