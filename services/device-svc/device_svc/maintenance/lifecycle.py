"""A maintenance task's lifecycle as one table: (status, action) -> next status. Nothing else changes
`MaintenanceTask.status`; `apply` is the one function that does.

    open ──assign──▶ assigned ──start──▶ in_progress ──done (note)──▶ done
     │  ▲              │  ▲                 │
     │  └──────────────┘  └──assign─────────┤        (re-assigning work in progress hands it over:
     └──start (self)──────────────────────▶ │         the new assignee starts it again)
     open / assigned / in_progress ──cancel (note)──▶ cancelled
Who may act is the permission on each route: dispatchers (`maintenance:dispatch`) assign and cancel,
field staff (`devices:maintain`) start and finish.
"""

from datetime import datetime
from enum import StrEnum

from contracts.events import MaintenanceTaskStatus
from device_svc.models import MaintenanceTask
from kit.errors import Conflict

S = MaintenanceTaskStatus


class Action(StrEnum):
    ASSIGN = "assign"
    START = "start"
    DONE = "done"
    CANCEL = "cancel"


OPEN = frozenset({S.OPEN, S.ASSIGNED, S.IN_PROGRESS})

TRANSITIONS: dict[tuple[MaintenanceTaskStatus, Action], MaintenanceTaskStatus] = {
    (S.OPEN, Action.ASSIGN): S.ASSIGNED,
    (S.ASSIGNED, Action.ASSIGN): S.ASSIGNED,
    (S.IN_PROGRESS, Action.ASSIGN): S.ASSIGNED,
    (S.OPEN, Action.START): S.IN_PROGRESS,
    (S.ASSIGNED, Action.START): S.IN_PROGRESS,
    (S.IN_PROGRESS, Action.DONE): S.DONE,
    (S.OPEN, Action.CANCEL): S.CANCELLED,
    (S.ASSIGNED, Action.CANCEL): S.CANCELLED,
    (S.IN_PROGRESS, Action.CANCEL): S.CANCELLED,
}


class TaskTransitionNotAllowed(Conflict):
    code = "task_transition_not_allowed"
    title = "The maintenance task cannot do that in its current status"


def next_status(status: MaintenanceTaskStatus, action: Action) -> MaintenanceTaskStatus:
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise TaskTransitionNotAllowed(
            f"A task that is {status.value} cannot {action.value}", task_status=status.value, action=action.value
        ) from None


def apply(task: MaintenanceTask, action: Action, now: datetime) -> MaintenanceTaskStatus:
    """Move `task` by `action`; returns the status it had. Stamps the closing time."""
    before = MaintenanceTaskStatus(task.status)
    after = next_status(before, action)
    task.status = after.value
    task.updated_at = now
    if after not in OPEN:
        task.closed_at = now
    return before
