import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PURCHASE_CEILING_FEN = 9900


class PriceOut(BaseModel):
    """The price that applies to a rental started now; a rental keeps the price it started with."""

    currency: str = "CNY"
    period_minutes: int = Field(description="Every started period is charged")
    price_per_period_fen: int
    free_minutes: int = Field(description="A rental of at most this long is free")
    daily_cap_fen: int = Field(description="No 24 h window of a rental costs more than this")
    purchase_ceiling_fen: int | None = Field(
        default=None, description="An unreturned bank costing this much becomes the user's; no more is charged"
    )
    plan_id: uuid.UUID | None = None
    plan_name: str | None = None
    rule: str


class PlanFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    period_minutes: int = Field(ge=1, le=24 * 60, strict=True)
    price_per_period_fen: int = Field(ge=0, le=1_000_000, strict=True)
    free_minutes: int = Field(ge=0, le=24 * 60, strict=True)
    daily_cap_fen: int = Field(ge=0, le=10_000_000, strict=True)
    # Every plan has one: an unreturned bank never costs more than this (¥99 unless the plan says).
    purchase_ceiling_fen: int = Field(default=DEFAULT_PURCHASE_CEILING_FEN, ge=1, le=100_000_000, strict=True)


class PlanIn(PlanFields):
    scope: Literal["default", "region", "cabinet"]
    scope_value: str = Field(default="", max_length=128)

    @model_validator(mode="after")
    def _value_matches_scope(self) -> "PlanIn":
        if (self.scope == "default") != (self.scope_value == ""):
            raise ValueError("scope_value is empty exactly for the default scope")
        return self


class PlanPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    period_minutes: int | None = Field(default=None, ge=1, le=24 * 60, strict=True)
    price_per_period_fen: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    free_minutes: int | None = Field(default=None, ge=0, le=24 * 60, strict=True)
    daily_cap_fen: int | None = Field(default=None, ge=0, le=10_000_000, strict=True)
    purchase_ceiling_fen: int | None = Field(default=None, ge=1, le=100_000_000, strict=True)
    active: bool | None = None

    @model_validator(mode="after")
    def _no_null_ceiling(self) -> "PlanPatch":
        if "purchase_ceiling_fen" in self.model_fields_set and self.purchase_ceiling_fen is None:
            raise ValueError("every plan has a purchase ceiling; it can be changed, not removed")
        return self


class PlanOut(PlanFields):
    model_config = ConfigDict(extra="ignore")

    plan_id: uuid.UUID
    scope: str
    scope_value: str
    active: bool
    updated_by: str
    updated_at: datetime


class PlanList(BaseModel):
    items: list[PlanOut]
