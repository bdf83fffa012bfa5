import uuid
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from asset_credit_svc.charges import service as charges
from asset_credit_svc.debts import service as debts
from asset_credit_svc.deposit import service as deposits
from asset_credit_svc.models import TopUp, TopUpStatus
from asset_credit_svc.payments import service
from asset_credit_svc.payments.providers import (
    PROVIDERS_KEY,
    InvalidSignature,
    MalformedNotification,
    NotificationToIgnore,
    PaymentProvider,
)
from asset_credit_svc.payments.schemas import TopUpIn, TopUpOut, TopUpPayOut
from kit.app import RuntimeDep
from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep
from kit.errors import BusinessError
from kit.idempotency import IdempotencyKey

__all__ = ["PROVIDERS_KEY", "notify_router", "top_ups_router"]

MAX_NOTIFY_BYTES = 16 * 1024

top_ups_router = APIRouter(prefix="/v1/wallet/top-ups", tags=["top-ups"], dependencies=[user_scope("wallet")])
notify_router = APIRouter(prefix="/v1/payments", tags=["payments"])


class PayloadTooLarge(BusinessError):
    status = 413
    code = "payload_too_large"
    title = "The notification is too large"


def get_providers(runtime: RuntimeDep) -> Mapping[str, PaymentProvider]:
    providers: Mapping[str, PaymentProvider] = runtime.extras[PROVIDERS_KEY]
    return providers


ProvidersDep = Annotated[Mapping[str, PaymentProvider], Depends(get_providers)]


def _out(top_up: TopUp) -> TopUpOut:
    return TopUpOut(
        top_up_id=top_up.id,
        status=TopUpStatus(top_up.status),
        amount_fen=top_up.amount_fen,
        channel=top_up.channel,
        created_at=top_up.created_at,
        completed_at=top_up.completed_at,
        failure_reason=top_up.failure_reason,
    )


@top_ups_router.post("", status_code=status.HTTP_201_CREATED, response_model=TopUpOut)
async def create_top_up(
    body: TopUpIn,
    user: CurrentUser,
    session: SessionDep,
    providers: ProvidersDep,
    response: Response,
    key: IdempotencyKey,
) -> TopUpOut:
    top_up, created = await service.create_top_up(
        session, providers, user_id=user.user_id, idempotency_key=key, amount_fen=body.amount_fen, channel=body.channel
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(top_up)


@top_ups_router.get("/{top_up_id}", response_model=TopUpOut)
async def get_top_up(top_up_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> TopUpOut:
    return _out(await service.get_top_up(session, user.user_id, top_up_id))


@top_ups_router.post("/{top_up_id}/pay", response_model=TopUpPayOut)
async def pay_top_up(
    top_up_id: uuid.UUID, user: CurrentUser, session: ReadSessionDep, providers: ProvidersDep
) -> TopUpPayOut:
    top_up, order = await service.pay_params(session, providers, user_id=user.user_id, top_up_id=top_up_id)
    return TopUpPayOut(top_up_id=top_up.id, channel=top_up.channel, pay_params=dict(order.pay_params))


@notify_router.post(
    "/{channel}/notify",
    response_class=Response,
    responses={200: {"description": "Applied or a duplicate; the body is what the channel expects"}},
)
async def provider_notification(
    channel: str, request: Request, session: SessionDep, runtime: RuntimeDep, providers: ProvidersDep
) -> Response:
    """Called by the payment provider, authenticated by its signature (no user token)."""
    provider = service.provider_for(providers, channel)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_NOTIFY_BYTES:
        raise PayloadTooLarge()
    body = await request.body()
    if len(body) > MAX_NOTIFY_BYTES:
        raise PayloadTooLarge()
    try:
        notification = provider.verify_notification(request.headers, body)
    except InvalidSignature:
        raise service.InvalidSignatureError() from None
    except MalformedNotification as exc:
        raise service.InvalidNotification(str(exc)) from None
    except NotificationToIgnore:
        answer = provider.acknowledgement()
        return Response(content=answer.body, media_type=answer.media_type)
    if charges.is_charge_order(notification.out_trade_no):
        await charges.apply_notification(session, runtime, channel, notification)
    elif debts.is_debt_order(notification.out_trade_no):
        await debts.apply_notification(session, runtime, channel, notification)
    elif deposits.is_deposit_order(notification.out_trade_no):
        await deposits.apply_notification(session, runtime, channel, notification)
    else:
        await service.apply_notification(session, runtime, channel, notification)
    answer = provider.acknowledgement()
    return Response(content=answer.body, media_type=answer.media_type)
