"""Webhook subscriptions, deliveries and their attempt log as staff see them."""

import uuid

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, Field


class SubscriptionIn(BaseModel):
    partner: str = Field(min_length=1, max_length=100)
    url: AnyHttpUrl
    event_types: list[str] = Field(min_length=1, max_length=20)


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    partner: str
    url: str
    event_types: list[str]
    active: bool
    created_by: str
    created_at: AwareDatetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="Signs every delivery (shown once)")


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


class AttemptOut(BaseModel):
    at: AwareDatetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: AwareDatetime
    last_error: str | None
    created_at: AwareDatetime
    delivered_at: AwareDatetime | None
    log: list[AttemptOut] | None = None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class PartnerLimitIn(BaseModel):
    per_minute: int | None = Field(ge=1, le=60_000, description="Requests per minute; null: the default")


class PartnerLimitOut(BaseModel):
    partner: str
    per_minute: int
    default: bool


class PartnerLimitList(BaseModel):
    items: list[PartnerLimitOut]
    default_per_minute: int
