from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from notify_svc.models import VasKind

Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{2,39}$")]


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    kind: VasKind
    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = Field(
        description="who delivers the service: a partner's name, or the platform"
    )
    price_fen: int | None = Field(
        default=None, ge=1, le=100_000, description="fen charged when a user takes it (absent: free)"
    )


class NoticeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]


class RiskNoticeOut(BaseModel):
    version: int
    text: str
    published_at: datetime


Payment = Literal["pending", "paid", "failed", "refunded"]


class Refund(BaseModel):
    amount_fen: int
    reason: str = Field(description="finance's reason, as given at the refund")
    at: datetime


class ServiceOut(BaseModel):
    code: str
    name: str
    description: str
    kind: VasKind
    provider: str
    price_fen: int | None
    retired_at: datetime | None = Field(default=None, description="off the catalogue since (staff only)")
    risk_notice: RiskNoticeOut | None = Field(description="the current version; none yet: not offered")
    consented_version: int | None = Field(default=None, description="the version you accepted (users only)")
    consent_current: bool | None = Field(default=None, description="you accepted the current version")
    payment: Payment | None = Field(
        default=None,
        description="a priced service you accepted: `pending` until asset-credit took the fee, then `paid` (a "
        "failed payment withdraws the acceptance); `refunded` once finance gave the fee back",
    )


class ServiceList(BaseModel):
    items: list[ServiceOut]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="the version of the risk notice you read")


class ConsentOut(BaseModel):
    service_code: str
    version: int | None
    action: str
    at: datetime
    reason: str | None = Field(default=None, description="recorded by the platform: `payment_failed`")
    payment: Payment | None = Field(
        default=None, description="an accepted priced service: pending, paid, failed or refunded"
    )
    refund: Refund | None = Field(default=None, description="with `refunded`: how much went back, why and when")


class StaffConsentOut(ConsentOut):
    user_id: str


class ConsentList(BaseModel):
    items: list[ConsentOut]


class StaffConsentList(BaseModel):
    items: list[StaffConsentOut]
