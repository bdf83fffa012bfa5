"""Partner webhooks for staff (permission `partners:manage`): subscriptions with a filter, deliveries,
the dead-letter list, replay, and each delivery's attempt log."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from analytics_svc.models import WebhookDelivery, WebhookPartnerLimit, WebhookSubscription
from analytics_svc.settings import Settings
from analytics_svc.webhooks import repository as repo
from analytics_svc.webhooks import service
from analytics_svc.webhooks.schemas import (
    AttemptOut,
    DeliveryList,
    DeliveryOut,
    PartnerLimitIn,
    PartnerLimitList,
    PartnerLimitOut,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionList,
    SubscriptionOut,
)
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.errors import BusinessError

PartnerAdmin = Annotated[Principal, Depends(require_permission("partners:manage"))]
Limit = Annotated[int, Query(ge=1, le=1000)]

router = APIRouter(prefix="/v1/admin/webhooks", tags=["partner webhooks"])


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


class UnknownEventType(BusinessError):
    status = 422
    code = "unknown_event_type"
    title = "Partners may subscribe to these event types only"


SUBSCRIPTION = row_state(WebhookSubscription)


@router.post(
    "",
    response_model=SubscriptionCreated,
    status_code=201,
    dependencies=[audited("webhook.subscribe", "webhook_subscription", state=SUBSCRIPTION)],
)
async def subscribe(
    body: SubscriptionIn, who: PartnerAdmin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> SubscriptionCreated:
    """422 `webhook_url_refused` when the URL's host resolves to a private, loopback, link-local (metadata)
    or reserved address, or does not resolve."""
    unknown = sorted(set(body.event_types) - service.EVENT_TYPES)
    if unknown:
        raise UnknownEventType(f"Not offered to partners: {', '.join(unknown)}", allowed=sorted(service.EVENT_TYPES))
    created = await service.subscribe(
        session,
        partner=body.partner,
        url=str(body.url),
        event_types=body.event_types,
        by=who.subject,
        allow_loopback=_settings(runtime).webhook_allow_loopback,
    )
    audit.note(target_id=created.id)
    return SubscriptionCreated.model_validate(created, from_attributes=True)


@router.get("", response_model=SubscriptionList)
async def subscriptions(_: PartnerAdmin, session: SessionDep) -> SubscriptionList:
    items = [SubscriptionOut.model_validate(s, from_attributes=True) for s in await repo.subscriptions(session)]
    return SubscriptionList(items=items)


@router.get("/partners", response_model=PartnerLimitList)
async def partner_limits(_: PartnerAdmin, session: SessionDep, runtime: RuntimeDep) -> PartnerLimitList:
    """Every partner's delivery rate limit (requests per minute; its own or the default)."""
    default = _settings(runtime).webhook_partner_per_minute
    items = [
        PartnerLimitOut(partner=b.partner, per_minute=b.per_minute or default, default=b.per_minute is None)
        for b in await repo.partner_limits(session)
    ]
    return PartnerLimitList(items=items, default_per_minute=default)


@router.put(
    "/partners/{partner}",
    status_code=204,
    dependencies=[
        audited("webhook_partner.set_limit", "webhook_partner", "partner", state=row_state(WebhookPartnerLimit))
    ],
)
async def set_partner_limit(partner: str, body: PartnerLimitIn, _: PartnerAdmin, session: SessionDep) -> None:
    """Set a partner's delivery rate limit (all its subscriptions share it); `null` goes back to the default."""
    await service.set_partner_limit(session, partner, body.per_minute)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    dependencies=[audited("webhook.unsubscribe", "webhook_subscription", "subscription_id", state=SUBSCRIPTION)],
)
async def unsubscribe(subscription_id: uuid.UUID, _: PartnerAdmin, session: SessionDep) -> None:
    if not await repo.deactivate(session, subscription_id):
        raise service.SubscriptionNotFound(f"Webhook subscription {subscription_id} does not exist")


@router.get("/{subscription_id}/deliveries", response_model=DeliveryList)
async def deliveries(
    subscription_id: uuid.UUID,
    _: PartnerAdmin,
    session: SessionDep,
    status: Literal["pending", "delivered", "dead"] | None = None,
    limit: Limit = 200,
) -> DeliveryList:
    found = await repo.deliveries(session, subscription_id=subscription_id, status=status, limit=limit)
    return DeliveryList(items=[DeliveryOut.model_validate(d, from_attributes=True) for d in found])


@router.get("/dead-letters", response_model=DeliveryList)
async def dead_letters(_: PartnerAdmin, session: SessionDep, limit: Limit = 200) -> DeliveryList:
    """Deliveries given up after the last attempt, newest first: replay them once the partner is back."""
    found = await repo.deliveries(session, subscription_id=None, status="dead", limit=limit)
    return DeliveryList(items=[DeliveryOut.model_validate(d, from_attributes=True) for d in found])


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
async def delivery(delivery_id: uuid.UUID, _: PartnerAdmin, session: SessionDep) -> DeliveryOut:
    found = await repo.deliveries_by_id(session, delivery_id)
    if found is None:
        raise service.DeliveryNotFound(f"Webhook delivery {delivery_id} does not exist")
    log = [AttemptOut.model_validate(a, from_attributes=True) for a in await repo.attempts(session, delivery_id)]
    return DeliveryOut.model_validate(found, from_attributes=True).model_copy(update={"log": log})


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=DeliveryOut,
    dependencies=[
        audited(
            "webhook_delivery.replay",
            "webhook_delivery",
            "delivery_id",
            state=row_state(WebhookDelivery, exclude=("payload",)),
        )
    ],
)
async def replay(delivery_id: uuid.UUID, _: PartnerAdmin, session: SessionDep) -> DeliveryOut:
    return DeliveryOut.model_validate(await service.replay(session, delivery_id), from_attributes=True)
