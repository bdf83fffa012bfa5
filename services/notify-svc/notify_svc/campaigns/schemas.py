from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.regions import DivisionCode


class Channel(StrEnum):
    INBOX = "inbox"
    PUSH = "push"
    SMS = "sms"


class Segment(BaseModel):
    """Who gets a campaign: every rule given must hold (AND); `all_users` alone selects everyone.
    Deregistered users are never selected."""

    model_config = ConfigDict(extra="forbid")

    all_users: bool = False
    regions: list[DivisionCode] | None = Field(
        default=None, min_length=1, max_length=100, description="the division of the user's last rental, or within it"
    )
    credit_levels: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] | None = Field(
        default=None, min_length=1, max_length=10
    )
    last_active_after: AwareDatetime | None = None
    last_active_before: AwareDatetime | None = Field(
        default=None, description="last rental before this time, or never rented"
    )
    has_unused_coupon: bool | None = None
    registered_after: AwareDatetime | None = None
    registered_before: AwareDatetime | None = None

    def rules(self) -> dict[str, object]:
        return {k: v for k, v in self.model_dump(exclude={"all_users"}).items() if v is not None}

    @model_validator(mode="after")
    def _one_way_to_say_everyone(self) -> Self:
        if self.all_users and self.rules():
            raise ValueError("all_users selects everyone: give no other rule with it")
        if not self.all_users and not self.rules():
            raise ValueError("give at least one rule, or all_users: true")
        return self


Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    text: Body
    segment: Segment
    channels: list[Channel] = Field(min_length=1, max_length=3)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    send_at: AwareDatetime | None = Field(default=None, description="absent or past: now")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: Segment


class Reach(BaseModel):
    inbox: int
    push: int
    sms: int


class PreviewOut(BaseModel):
    audience: int = Field(description="users the segment selects now")
    reachable: Reach = Field(description="of them, who consented to marketing on each channel (push: with a phone)")


class CampaignStats(BaseModel):
    batches: int
    recipients: int
    inbox_delivered: int
    push_queued: int
    push_delivered: int
    sms_sent: int
    sms_deferred: int = Field(description="marketing SMS held for the end of recipients' quiet hours (sent later)")
    unreached: int
    opened: int
    clicked: int


class CampaignOut(BaseModel):
    campaign_id: str
    title: str
    text: str
    segment: Segment
    channels: list[Channel]
    status: str
    notice_id: str | None
    created_by: str
    created_at: datetime
    send_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    stats: CampaignStats


class CampaignList(BaseModel):
    items: list[CampaignOut]
