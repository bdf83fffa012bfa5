"""The platform-wide staff audit trail (issue 15), recorded by every service and kept by user-svc."""

from typing import Any, Literal, TypeAlias

from pydantic import AwareDatetime, Field

from contracts.events._base import _Data
from contracts.topics import Topic


class StaffActionRecorded(_Data):
    """A staff member (administrator, operator, ...) did something in a service: one audit trail for the
    whole platform, kept append-only and hash-chained by user-svc (`kit.audit`, issue 15). `before` and
    `after` hold the fields the action changed; `client_address` is where the request came from."""

    type: Literal["audit.staff_action.recorded"] = "audit.staff_action.recorded"
    actor_id: str = Field(max_length=64)
    actor_kind: str = Field(max_length=16)  # admin | client
    actor_roles: list[str] = Field(max_length=20)
    action: str = Field(max_length=80)
    target_type: str = Field(max_length=40)
    target_id: str = Field(max_length=128)
    reason: str | None = Field(default=None, max_length=2000)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    client_address: str | None = Field(default=None, max_length=64)
    at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = StaffActionRecorded

TOPICS: dict[str, Topic] = {
    "audit.staff_action.recorded": Topic.STAFF_AUDIT,  # key: the acting staff member's id
}
