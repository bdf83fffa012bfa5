"""Value-added services: users read the offers with their current risk notice and accept or withdraw
at /v1/value-added-services (their own token only: no application may consent for a user); staff
define services, publish risk notice versions and read the consent records at
/v1/admin/value-added-services (permission `vas:manage`)."""

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Path, Query, Request

from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import CurrentUser, Principal, require_permission
from kit.db import ReadSessionDep, SessionDep
from notify_svc.models import ConsentRecord, RiskNotice, ValueAddedService, VasKind, VasPayment
from notify_svc.vas import repository as repo
from notify_svc.vas import service
from notify_svc.vas.schemas import (
    ConsentIn,
    ConsentList,
    ConsentOut,
    NoticeIn,
    Payment,
    Refund,
    RiskNoticeOut,
    ServiceIn,
    ServiceList,
    ServiceOut,
    StaffConsentList,
    StaffConsentOut,
)

router = APIRouter(prefix="/v1/value-added-services", tags=["value-added services"])
staff_router = APIRouter(prefix="/v1/admin/value-added-services", tags=["value-added services (staff)"])

Manager = Annotated[Principal, Depends(require_permission("vas:manage"))]
Limit = Annotated[int, Query(ge=1, le=100)]
Code = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{2,39}$")]


def _notice(n: RiskNotice | None) -> RiskNoticeOut | None:
    return RiskNoticeOut(version=n.version, text=n.text, published_at=n.published_at) if n else None


def _payment(record: ConsentRecord, price_fen: int | None, payments: dict[int, VasPayment]) -> Payment | None:
    """An accepted priced consent: asset-credit's answer (or finance's refund), or `pending` until it comes."""
    if record.action != "accepted" or not price_fen:
        return None
    found = payments.get(record.id)
    return "pending" if found is None else cast(Payment, found.status)


def _refund(record: ConsentRecord, payments: dict[int, VasPayment]) -> Refund | None:
    found = payments.get(record.id)
    if found is None or found.refunded_at is None or found.refunded_fen is None:
        return None
    return Refund(amount_fen=found.refunded_fen, reason=found.refund_reason or "", at=found.refunded_at)


def _service(
    s: ValueAddedService,
    notice: RiskNotice | None,
    consent: ConsentRecord | None = None,
    payments: dict[int, VasPayment] | None = None,
) -> ServiceOut:
    accepted = consent.version if consent is not None and consent.action == "accepted" else None
    return ServiceOut(
        code=s.code,
        name=s.name,
        description=s.description,
        kind=VasKind(s.kind),
        provider=s.provider,
        price_fen=s.price_fen,
        retired_at=s.retired_at,
        risk_notice=_notice(notice),
        consented_version=accepted,
        consent_current=accepted is not None and notice is not None and accepted == notice.version,
        payment=_payment(consent, s.price_fen, payments or {}) if consent is not None else None,
    )


def _consent(r: ConsentRecord, payment: Payment | None = None, refund: Refund | None = None) -> ConsentOut:
    return ConsentOut(
        service_code=r.service_code,
        version=r.version,
        action=r.action,
        at=r.at,
        reason=r.reason,
        payment=payment,
        refund=refund,
    )


@router.get("")
async def offers(user: CurrentUser, session: ReadSessionDep) -> ServiceList:
    """Every service on offer with its current risk notice and whether you accepted that version; one you
    took that is no longer offered stays listed while your consent stands (so you can withdraw it)."""
    notices = await repo.current_notices(session)
    consents = await repo.latest_consents(session, user.user_id)
    listed = [
        s
        for s in await repo.services(session)
        if s.retired_at is None or (s.code in consents and consents[s.code].action == "accepted")
    ]
    payments = await repo.payments(session, [c.id for c in consents.values()])
    return ServiceList(items=[_service(s, notices.get(s.code), consents.get(s.code), payments) for s in listed])


@router.get("/consents")
async def my_consents(user: CurrentUser, session: ReadSessionDep, limit: Limit = 50) -> ConsentList:
    records = await repo.records_of_user(session, user.user_id, limit)
    payments = await repo.payments(session, [r.id for r in records])
    prices = {s.code: s.price_fen for s in await repo.services(session)}
    return ConsentList(
        items=[_consent(r, _payment(r, prices.get(r.service_code), payments), _refund(r, payments)) for r in records]
    )


@router.post("/{code}/consents", status_code=201)
async def accept(
    code: Code, body: ConsentIn, request: Request, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> ConsentOut:
    """Accept the risk notice version you read (it must be the current one)."""
    agent = request.headers.get("user-agent")
    record = await service.accept(session, runtime, user.user_id, code, body.version, agent)
    return _consent(record)


@router.post("/{code}/withdraw", status_code=201)
async def withdraw(
    code: Code, request: Request, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> ConsentOut:
    agent = request.headers.get("user-agent")
    return _consent(await service.withdraw(session, runtime, user.user_id, code, agent))


SERVICE = row_state(ValueAddedService)


@staff_router.post("", status_code=201, dependencies=[audited("vas.create", "vas", state=SERVICE)])
async def create(body: ServiceIn, staff: Manager, session: SessionDep, audit: CurrentAudit) -> ServiceOut:
    created = await service.create(session, body, staff.subject)
    audit.note(target_id=created.code)
    return _service(created, None)


@staff_router.get("")
async def catalogue(_: Manager, session: ReadSessionDep) -> ServiceList:
    """The whole catalogue, retired services included, each with its current risk notice."""
    notices = await repo.current_notices(session)
    return ServiceList(items=[_service(s, notices.get(s.code)) for s in await repo.services(session)])


@staff_router.post("/{code}/retire", dependencies=[audited("vas.retire", "vas", "code", state=SERVICE)])
async def retire(code: Code, _: Manager, session: SessionDep) -> ServiceOut:
    """Take a service off the catalogue (`409 service_retired` for whoever tries to take it since)."""
    found = await service.retire(session, code)
    return _service(found, (await repo.current_notices(session)).get(code))


@staff_router.post(
    "/{code}/risk-notices", status_code=201, dependencies=[audited("vas.publish_risk_notice", "vas", "code")]
)
async def publish_notice(
    code: Code, body: NoticeIn, staff: Manager, session: SessionDep, audit: CurrentAudit
) -> RiskNoticeOut:
    """A new version of the risk notice; earlier consents no longer count as current."""
    notice = await service.publish_notice(session, code, body.text, staff.subject)
    out = _notice(notice)
    assert out is not None
    audit.changed({"risk_notice_version": out.version - 1}, {"risk_notice_version": out.version})
    return out


@staff_router.get("/{code}/consents")
async def consents(code: Code, _: Manager, session: ReadSessionDep, limit: Limit = 100) -> StaffConsentList:
    """The consent records of a service, newest first (the audit of who accepted which version when), each
    accepted priced one with its payment: pending, paid, failed, or refunded (with the refund)."""
    found = await service.get(session, code)
    records = await repo.records_of_service(session, code, limit)
    payments = await repo.payments(session, [r.id for r in records])
    return StaffConsentList(
        items=[
            StaffConsentOut(
                user_id=str(r.user_id),
                service_code=r.service_code,
                version=r.version,
                action=r.action,
                at=r.at,
                reason=r.reason,
                payment=_payment(r, found.price_fen, payments),
                refund=_refund(r, payments),
            )
            for r in records
        ]
    )
