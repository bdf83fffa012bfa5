"""Unit tests: the ticket lifecycle table (no database)."""

from datetime import UTC, datetime

import pytest

from contracts.events import TicketStatus
from notify_svc.models import Ticket
from notify_svc.tickets import lifecycle
from notify_svc.tickets.lifecycle import ACTORS, OPEN, TRANSITIONS, Action, Actor, next_status

S = TicketStatus
NOW = datetime(2026, 12, 4, 19, 0, tzinfo=UTC)


def test_the_happy_path_and_back():
    steps = [
        (Action.ASSIGN, Actor.STAFF, S.ASSIGNED),
        (Action.ASK_USER, Actor.STAFF, S.WAITING_USER),
        (Action.USER_REPLY, Actor.USER, S.ASSIGNED),
        (Action.RESOLVE, Actor.STAFF, S.RESOLVED),
        (Action.REOPEN, Actor.USER, S.REOPENED),
        (Action.STAFF_REPLY, Actor.STAFF, S.ASSIGNED),
        (Action.RESOLVE, Actor.STAFF, S.RESOLVED),
        (Action.CLOSE, Actor.USER, S.CLOSED),
    ]
    status = S.NEW
    for action, actor, expected in steps:
        status = next_status(status, action, actor)
        assert status is expected


def test_every_status_is_reachable_and_closed_only_reopens():
    reached = {S.NEW} | set(TRANSITIONS.values())
    assert reached == set(S)
    assert {a for (s, a) in TRANSITIONS if s is S.CLOSED} == {Action.REOPEN}
    assert {a for (s, a) in TRANSITIONS if s is S.RESOLVED} == {Action.CLOSE, Action.REOPEN}
    for status in OPEN:  # a user may withdraw any open ticket
        assert TRANSITIONS[(status, Action.CLOSE)] is S.CLOSED
    assert set(ACTORS) == set(Action)


@pytest.mark.parametrize(
    ("status", "action", "actor", "error"),
    [
        (S.CLOSED, Action.USER_REPLY, Actor.USER, lifecycle.TicketTransitionNotAllowed),
        (S.CLOSED, Action.RESOLVE, Actor.STAFF, lifecycle.TicketTransitionNotAllowed),
        (S.RESOLVED, Action.ASSIGN, Actor.STAFF, lifecycle.TicketTransitionNotAllowed),
        (S.NEW, Action.REOPEN, Actor.USER, lifecycle.TicketTransitionNotAllowed),
        (S.ASSIGNED, Action.RESOLVE, Actor.USER, lifecycle.TicketActionForbidden),
        (S.NEW, Action.ASSIGN, Actor.USER, lifecycle.TicketActionForbidden),
        (S.WAITING_USER, Action.USER_REPLY, Actor.STAFF, lifecycle.TicketActionForbidden),
    ],
)
def test_refusals(status, action, actor, error):
    with pytest.raises(error):
        next_status(status, action, actor)


def test_apply_stamps_times_and_returns_the_old_status():
    ticket = Ticket(status=S.ASSIGNED.value)
    assert lifecycle.apply(ticket, Action.RESOLVE, Actor.STAFF, NOW) is S.ASSIGNED
    assert (ticket.status, ticket.resolved_at, ticket.updated_at) == ("resolved", NOW, NOW)
    lifecycle.apply(ticket, Action.CLOSE, Actor.USER, NOW)
    assert ticket.closed_at == NOW
    lifecycle.apply(ticket, Action.REOPEN, Actor.USER, NOW)
    assert (ticket.status, ticket.resolved_at, ticket.closed_at) == ("reopened", None, None)
