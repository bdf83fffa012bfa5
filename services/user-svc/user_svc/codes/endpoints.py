from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.ratelimit import rate_class, request_address
from user_svc.codes import repository, service
from user_svc.codes.schemas import CodeSentOut, DevMessageOut, SmsCodeIn
from user_svc.context import ContextDep
from user_svc.validators import PlainText

router = APIRouter(tags=["verification codes"])
dev_router = APIRouter(tags=["development"])


def client_address(request: Request) -> str:
    """The caller's address, through trusted proxies only (kit.ratelimit)."""
    return request_address(request)


@router.post("/v1/sms-codes", status_code=status.HTTP_202_ACCEPTED, dependencies=[rate_class("sms")])
async def send_sms_code(
    body: SmsCodeIn, request: Request, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> CodeSentOut:
    """Send a 6-digit code by SMS for registration or login. The answer is the same whether or not
    the number is registered."""
    sent = await service.send_code(
        session,
        runtime.sessionmaker,
        channel="sms",
        destination=body.phone,
        purpose=body.purpose,
        client_ip=client_address(request),
        settings=context.settings,
        provider=context.provider,
    )
    return CodeSentOut(expires_in=sent.expires_in, resend_after=sent.resend_after)


DevAdmin = Annotated[Principal, Depends(require_permission("dev:read"))]


@dev_router.get("/v1/dev/messages")
async def dev_messages(
    _: DevAdmin,
    session: SessionDep,
    destination: Annotated[PlainText | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[DevMessageOut]:
    """The sandbox provider's outbox, newest first (development and test deployments only)."""
    rows = await repository.dev_messages(session, destination=destination, limit=limit)
    return [
        DevMessageOut(
            channel=r.channel,
            destination=r.destination,
            body=r.body,
            code=r.code,
            status=r.status,
            created_at=r.created_at,
        )
        for r in rows
    ]
