"""Value-added services with versioned risk notices: staff define a service and publish its risk notice;
each new text is a new version. A user accepts the version they read (an older version than the
current one: `409 risk_notice_outdated`, read the new one); acceptance and withdrawal are append-only
consent records, the evidence of what the user agreed to and when."""

import logging
import uuid
from datetime import UTC, datetime
from typing import Literal, cast

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import VasConsentRecorded, VasFeeFailed, VasFeeRefunded, VasFeeSettled
from kit.app import Runtime
from kit.errors import Conflict, NotFound
from notify_svc.models import ConsentRecord, RiskNotice, ValueAddedService
from notify_svc.vas import payments
from notify_svc.vas import repository as repo
from notify_svc.vas.payments import PaymentState
from notify_svc.vas.schemas import ServiceIn

log = logging.getLogger(__name__)


class ServiceNotFound(NotFound):
    code = "service_not_found"
    title = "No such value-added service"


class ServiceExists(Conflict):
    code = "service_exists"
    title = "A value-added service with this code exists"


class ServiceRetired(Conflict):
    code = "service_retired"
    title = "This value-added service is no longer offered"


class NoRiskNotice(Conflict):
    code = "no_risk_notice"
    title = "The service has no risk notice yet: it cannot be taken"


class RiskNoticeOutdated(Conflict):
    code = "risk_notice_outdated"
    title = "The risk notice changed since you read it: read the current version"


class NotConsented(Conflict):
    code = "not_consented"
    title = "You have not accepted this service's risk notice"


async def get(session: AsyncSession, code: str, *, lock: bool = False) -> ValueAddedService:
    found = await repo.service(session, code, lock=lock)
    if found is None:
        raise ServiceNotFound(f"No value-added service {code!r}")
    return found


async def create(session: AsyncSession, body: ServiceIn, by: str) -> ValueAddedService:
    if await repo.service(session, body.code) is not None:
        raise ServiceExists(f"{body.code!r} exists")
    created = ValueAddedService(
        code=body.code,
        name=body.name,
        description=body.description,
        kind=body.kind.value,
        provider=body.provider,
        price_fen=body.price_fen,
        created_by=by,
        created_at=datetime.now(UTC),
    )
    session.add(created)
    await session.flush()
    return created


async def retire(session: AsyncSession, code: str) -> ValueAddedService:
    """Off the catalogue: nobody can take it any more; who took it can still withdraw, and the records stay."""
    found = await get(session, code, lock=True)
    if found.retired_at is None:
        found.retired_at = datetime.now(UTC)
        await session.flush()
    return found


async def publish_notice(session: AsyncSession, code: str, text: str, by: str) -> RiskNotice:
    found = await get(session, code, lock=True)  # versions of one service are numbered one at a time
    if found.retired_at is not None:
        raise ServiceRetired()
    notice = RiskNotice(
        service_code=code,
        version=await repo.latest_version(session, code) + 1,
        text=text,
        published_by=by,
        published_at=datetime.now(UTC),
    )
    session.add(notice)
    await session.flush()
    return notice


async def accept(
    session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, code: str, version: int, user_agent: str | None
) -> ConsentRecord:
    found = await get(session, code)
    if found.retired_at is not None:
        raise ServiceRetired()
    current = await repo.latest_version(session, code)
    if current == 0:
        raise NoRiskNotice()
    if version != current:
        raise RiskNoticeOutdated(f"The current version is {current}", current_version=current)
    return await _record(session, runtime, found, user_id, current, "accepted", user_agent)


async def withdraw(
    session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, code: str, user_agent: str | None
) -> ConsentRecord:
    found = await get(session, code)
    latest = (await repo.latest_consents(session, user_id)).get(code)
    if latest is None or latest.action != "accepted" or latest.version is None:
        raise NotConsented()
    return await _record(session, runtime, found, user_id, latest.version, "withdrawn", user_agent)


PAYMENT_FAILED = "payment_failed"


async def on_fee_settled(session: AsyncSession, data: VasFeeSettled) -> ValueAddedService | None:
    """asset-credit-svc took the fee: the consent is paid. The service, for the user's message; None when this
    answer was recorded before."""
    recorded = await repo.record_payment(
        session, {"consent_id": data.consent_id, "status": "paid", "amount_fen": data.amount_fen, "at": data.settled_at}
    )
    return await repo.service(session, data.service_code) if recorded else None


async def on_fee_failed(session: AsyncSession, runtime: Runtime, data: VasFeeFailed) -> ValueAddedService | None:
    """The fee could not be taken: record the answer and, while that acceptance is still the user's latest, a
    withdrawal by the platform (reason `payment_failed`), so the service is not delivered unpaid."""
    recorded = await repo.record_payment(
        session,
        {
            "consent_id": data.consent_id,
            "status": "failed",
            "amount_fen": data.amount_fen,
            "reason": data.reason,
            "at": data.at,
        },
    )
    if not recorded:
        return None
    vas = await get(session, data.service_code)
    latest = (await repo.latest_consents(session, data.user_id)).get(data.service_code)
    if latest is not None and latest.id == data.consent_id and latest.action == "accepted" and latest.version:
        await _record(session, runtime, vas, data.user_id, latest.version, "withdrawn", None, reason=PAYMENT_FAILED)
    return vas


async def on_fee_refunded(session: AsyncSession, data: VasFeeRefunded) -> bool:
    """Finance gave a paid fee back: the consent's payment becomes `refunded` (vas/payments.py). False when that
    is no move from its state (refunded already, failed, or no answer recorded: logged, nothing changes)."""
    payment = await repo.payment_for_update(session, data.consent_id)
    before = cast(PaymentState, payment.status) if payment is not None else None
    if payment is None or not payments.allowed(before, "refunded"):
        log.warning("vas refund does not apply", extra={"consent_id": data.consent_id, "payment": before or "pending"})
        return False
    payment.status = "refunded"
    payment.refunded_fen = data.amount_fen
    payment.refund_reason = data.reason
    payment.refunded_at = data.refunded_at
    await session.flush()
    return True


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    vas: ValueAddedService,
    user_id: uuid.UUID,
    version: int,
    action: Literal["accepted", "withdrawn"],
    user_agent: str | None,
    *,
    reason: str | None = None,
) -> ConsentRecord:
    """The record and its event commit together: a priced service is charged from the event (docs/service.md)."""
    record = ConsentRecord(
        user_id=user_id,
        service_code=vas.code,
        version=version,
        action=action,
        at=datetime.now(UTC),
        user_agent=(user_agent or "")[:200] or None,
        reason=reason,
    )
    session.add(record)
    await session.flush()
    await runtime.publish(
        session,
        VasConsentRecorded(
            consent_id=record.id,
            user_id=user_id,
            service_code=vas.code,
            provider=vas.provider,
            action=action,
            notice_version=version,
            price_fen=vas.price_fen,
            at=record.at,
            reason=reason,
        ),
        key=str(user_id),
    )
    return record
