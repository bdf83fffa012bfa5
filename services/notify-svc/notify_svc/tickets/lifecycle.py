"""A ticket's lifecycle as one table: (status, action) -> next status, and who may take each action.
Nothing else changes `Ticket.status`; `apply` is the one function that does.

    new ──assign/staff reply──▶ assigned ──ask user──▶ waiting_user ──user reply──▶ assigned
     │                            │  ▲                     │
     └─────────resolve────────────┴──┼──────resolve────────┴──▶ resolved ──close──▶ closed
                                     │                              │                  │
                  reopened ◀─────────┼───────────reopen─────────────┴──────reopen──────┘
                     └──assign───────┘
A user may close (withdraw) an open ticket at any time and reopen a resolved or closed one.
"""

from datetime import datetime
from enum import StrEnum

from contracts.events import TicketStatus
from kit.errors import Conflict, Forbidden
from notify_svc.models import Ticket

S = TicketStatus


class Action(StrEnum):
    ASSIGN = "assign"
    STAFF_REPLY = "staff_reply"  # a reply that leaves the next step with support
    ASK_USER = "ask_user"  # a reply that waits for the user's answer
    USER_REPLY = "user_reply"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"


class Actor(StrEnum):
    USER = "user"
    STAFF = "staff"


OPEN = frozenset({S.NEW, S.ASSIGNED, S.WAITING_USER, S.REOPENED})

TRANSITIONS: dict[tuple[TicketStatus, Action], TicketStatus] = {
    (S.NEW, Action.ASSIGN): S.ASSIGNED,
    (S.ASSIGNED, Action.ASSIGN): S.ASSIGNED,
    (S.WAITING_USER, Action.ASSIGN): S.WAITING_USER,
    (S.REOPENED, Action.ASSIGN): S.ASSIGNED,
    (S.NEW, Action.STAFF_REPLY): S.ASSIGNED,
    (S.ASSIGNED, Action.STAFF_REPLY): S.ASSIGNED,
    (S.WAITING_USER, Action.STAFF_REPLY): S.WAITING_USER,
    (S.REOPENED, Action.STAFF_REPLY): S.ASSIGNED,
    (S.NEW, Action.ASK_USER): S.WAITING_USER,
    (S.ASSIGNED, Action.ASK_USER): S.WAITING_USER,
    (S.WAITING_USER, Action.ASK_USER): S.WAITING_USER,
    (S.REOPENED, Action.ASK_USER): S.WAITING_USER,
    (S.NEW, Action.USER_REPLY): S.NEW,
    (S.ASSIGNED, Action.USER_REPLY): S.ASSIGNED,
    (S.WAITING_USER, Action.USER_REPLY): S.ASSIGNED,
    (S.REOPENED, Action.USER_REPLY): S.REOPENED,
    (S.NEW, Action.RESOLVE): S.RESOLVED,
    (S.ASSIGNED, Action.RESOLVE): S.RESOLVED,
    (S.WAITING_USER, Action.RESOLVE): S.RESOLVED,
    (S.REOPENED, Action.RESOLVE): S.RESOLVED,
    (S.NEW, Action.CLOSE): S.CLOSED,
    (S.ASSIGNED, Action.CLOSE): S.CLOSED,
    (S.WAITING_USER, Action.CLOSE): S.CLOSED,
    (S.REOPENED, Action.CLOSE): S.CLOSED,
    (S.RESOLVED, Action.CLOSE): S.CLOSED,
    (S.RESOLVED, Action.REOPEN): S.REOPENED,
    (S.CLOSED, Action.REOPEN): S.REOPENED,
}

ACTORS: dict[Action, frozenset[Actor]] = {
    Action.ASSIGN: frozenset({Actor.STAFF}),
    Action.STAFF_REPLY: frozenset({Actor.STAFF}),
    Action.ASK_USER: frozenset({Actor.STAFF}),
    Action.USER_REPLY: frozenset({Actor.USER}),
    Action.RESOLVE: frozenset({Actor.STAFF}),
    Action.CLOSE: frozenset({Actor.USER, Actor.STAFF}),
    Action.REOPEN: frozenset({Actor.USER, Actor.STAFF}),
}


class TicketTransitionNotAllowed(Conflict):
    code = "ticket_transition_not_allowed"
    title = "The ticket cannot do that in its current status"


class TicketActionForbidden(Forbidden):
    code = "ticket_action_forbidden"
    title = "You cannot take this action on a ticket"


def next_status(status: TicketStatus, action: Action, actor: Actor) -> TicketStatus:
    if actor not in ACTORS[action]:
        raise TicketActionForbidden(f"A {actor.value} cannot {action.value.replace('_', ' ')} a ticket")
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise TicketTransitionNotAllowed(
            f"A ticket that is {status.value} cannot {action.value.replace('_', ' ')}",
            ticket_status=status.value,
            action=action.value,
        ) from None


def apply(ticket: Ticket, action: Action, actor: Actor, now: datetime) -> TicketStatus:
    """Move `ticket` by `action`; returns the status it had. Stamps resolution and closing times."""
    before = TicketStatus(ticket.status)
    after = next_status(before, action, actor)
    ticket.status = after.value
    ticket.updated_at = now
    if after is S.RESOLVED:
        ticket.resolved_at = now
    elif after is S.CLOSED:
        ticket.closed_at = now
    elif after is S.REOPENED:
        ticket.resolved_at = None
        ticket.closed_at = None
    return before
