"""Human voice service: a user asks to be called back (phone, topic, preferred time); the request is a
ticket in the staff queue; staff place the call through the telephony provider; the provider reports the
outcome later (answered, no answer, failed) in a signed callback, recorded on the request and as a line
on the ticket. A call not answered or failed may be placed again."""

import logging
import time
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import ReportKind
from kit.app import Runtime
from kit.errors import BusinessError, Conflict, NotFound
from notify_svc.callbacks import lifecycle
from notify_svc.callbacks import repository as repo
from notify_svc.callbacks.provider import CallRefused, TelephonyProvider, verify
from notify_svc.callbacks.schemas import CallbackIn, ProviderEvent
from notify_svc.models import CallbackRequest, CallbackStatus
from notify_svc.tickets import repository as tickets_repo
from notify_svc.tickets import service as tickets

log = logging.getLogger(__name__)

MAX_OPEN_PER_USER = 3


class CallbackNotFound(NotFound):
    code = "callback_not_found"
    title = "Call-back request not found"


class TooManyCallbacks(Conflict):
    code = "too_many_callbacks"
    title = "You already have call-back requests waiting"


class TelephonyUnavailable(BusinessError):
    status = 503
    code = "telephony_unavailable"
    title = "The telephony provider cannot be reached; try again"


class InvalidSignature(BusinessError):
    status = 401
    code = "invalid_signature"
    title = "The callback's signature is missing, wrong or too old"


class MalformedEvent(BusinessError):
    status = 400
    code = "malformed_event"
    title = "The callback's body is not a call event"


class CallNotFound(NotFound):
    code = "call_not_found"
    title = "No call with this id was placed"


async def request(session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, body: CallbackIn) -> CallbackRequest:
    if await repo.open_count(session, user_id) >= MAX_OPEN_PER_USER:
        raise TooManyCallbacks(f"At most {MAX_OPEN_PER_USER} open call-back requests", max_open=MAX_OPEN_PER_USER)
    now = datetime.now(UTC)
    if body.ticket_id is not None:
        ticket = await tickets.own_ticket(session, user_id, body.ticket_id, lock=True)
    else:
        ticket = await tickets.open_for(
            session, runtime, user_id=user_id, kind=ReportKind.CALLBACK, description=body.topic, at=now
        )
    callback = CallbackRequest(
        id=uuid.uuid4(),
        user_id=user_id,
        ticket_id=ticket.id,
        phone=body.phone,
        topic=body.topic,
        preferred_at=body.preferred_at,
        status=CallbackStatus.REQUESTED.value,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    repo.add(session, callback)
    when = body.preferred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if body.preferred_at else "soon"
    tickets.add_system_line(session, ticket, f"Call back requested ({when}): {body.topic}", "system")
    await session.flush()
    return callback


async def own(
    session: AsyncSession, user_id: uuid.UUID, callback_id: uuid.UUID, *, lock: bool = False
) -> CallbackRequest:
    callback = await repo.get(session, callback_id, lock=lock)
    if callback is None or callback.user_id != user_id:
        raise CallbackNotFound(f"You have no call-back request {callback_id}")
    return callback


async def get(session: AsyncSession, callback_id: uuid.UUID, *, lock: bool = False) -> CallbackRequest:
    callback = await repo.get(session, callback_id, lock=lock)
    if callback is None:
        raise CallbackNotFound(f"No call-back request {callback_id}")
    return callback


async def cancel(session: AsyncSession, user_id: uuid.UUID, callback_id: uuid.UUID) -> CallbackRequest:
    callback = await own(session, user_id, callback_id, lock=True)
    lifecycle.apply(callback, "cancel")
    repo.touch(callback, datetime.now(UTC))
    await _line(session, callback, "Call back cancelled by the user.")
    return callback


async def place(session: AsyncSession, provider: TelephonyProvider, callback_id: uuid.UUID, by: str) -> CallbackRequest:
    """Ask the provider to call; the outcome comes later (`on_provider_event`)."""
    callback = await get(session, callback_id, lock=True)
    if not lifecycle.allowed(callback, "place"):
        lifecycle.apply(callback, "place")  # raises the stable 409
    now = datetime.now(UTC)
    try:
        call_id = await provider.place_call(callback.phone, str(callback.id))
    except CallRefused as exc:
        lifecycle.apply(callback, "refused")
        callback.failure = f"refused: {exc}"[:100]
        repo.touch(callback, now)
        await _line(session, callback, "Call back failed: the provider refused the number.")
        return callback
    except Exception as exc:  # unreachable: nothing was placed, the request stays as it was
        log.warning("telephony provider unreachable", extra={"error": repr(exc)})
        raise TelephonyUnavailable() from exc
    lifecycle.apply(callback, "place")
    callback.attempts += 1
    callback.provider_call_id = call_id
    callback.placed_by = by
    callback.failure = None
    repo.touch(callback, now)
    await _line(session, callback, f"Calling you back (attempt {callback.attempts}).")
    return callback


async def on_provider_event(
    session: AsyncSession, secret: bytes, body: bytes, timestamp: str | None, signature: str | None
) -> CallbackRequest:
    """A signed outcome from the provider; a repeated one changes nothing."""
    if not verify(secret, timestamp, body, signature, time.time()):
        raise InvalidSignature()
    try:
        event = ProviderEvent.model_validate_json(body)
    except ValidationError:
        raise MalformedEvent() from None
    callback = await repo.by_call(session, event.call_id)
    if callback is None:
        raise CallNotFound(f"No call {event.call_id}")
    if callback.status != CallbackStatus.CALLING.value:
        return callback  # already recorded (the provider retried)
    lifecycle.apply(callback, event.outcome)
    callback.duration_s = event.duration_s if event.outcome == "answered" else None
    callback.failure = event.failure if event.outcome == "failed" else None
    repo.touch(callback, datetime.now(UTC))
    text = {
        "answered": f"Call back answered ({event.duration_s // 60} min {event.duration_s % 60} s).",
        "no_answer": "Call back: no answer. Support will try again.",
        "failed": f"Call back failed ({event.failure or 'network'}).",
    }[event.outcome]
    await _line(session, callback, text)
    log.info("call back outcome", extra={"callback_id": str(callback.id), "outcome": event.outcome})
    return callback


async def _line(session: AsyncSession, callback: CallbackRequest, text: str) -> None:
    ticket = await tickets_repo.get(session, callback.ticket_id, for_update=True)
    assert ticket is not None
    tickets.add_system_line(session, ticket, text, "telephony")
