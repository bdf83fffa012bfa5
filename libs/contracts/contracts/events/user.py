"""Events and commands of user-svc: accounts, sessions, and the SMS it sends."""

from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events._base import _Data
from contracts.topics import Topic


class UserRegistered(_Data):
    """A new account. `birth_year` only, never the birth date (data minimisation): enough for analytics'
    age bands; null when the user gave no birth date. Consumers forget it at `user.user.deregistered`."""

    type: Literal["user.user.registered"] = "user.user.registered"
    user_id: UUID
    registered_at: AwareDatetime
    terms_version: str
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class UserBlocked(_Data):
    """An administrator blocked the user: they cannot borrow until unblocked."""

    type: Literal["user.user.blocked"] = "user.user.blocked"
    user_id: UUID
    reason: str
    at: AwareDatetime


class UserUnblocked(_Data):
    type: Literal["user.user.unblocked"] = "user.user.unblocked"
    user_id: UUID
    at: AwareDatetime


class UserDeregistered(_Data):
    """The user closed the account: refund the deposit and forget personal data after retention."""

    type: Literal["user.user.deregistered"] = "user.user.deregistered"
    user_id: UUID
    at: AwareDatetime


class SessionRevoked(_Data):
    """Access tokens revoked before they expire (logout, refresh-token reuse, password change, block,
    deregistration, an application's access withdrawn). Every replica of every service reads
    `user.sessions.v1` without a consumer group and refuses these token ids (`jti`) until `expires_at`,
    when they would have expired anyway."""

    type: Literal["user.session.revoked"] = "user.session.revoked"
    user_id: UUID
    token_ids: list[str] = Field(min_length=1, max_length=10_000)
    expires_at: AwareDatetime
    reason: str = Field(default="", max_length=64)
    at: AwareDatetime


class SendSms(_Data):
    """Command to user-svc: text the user (who alone holds their phone number) through its SMS provider.
    notify-svc sends it for a critical message that no phone received by push."""

    type: Literal["user.send_sms"] = "user.send_sms"
    user_id: UUID
    text: str = Field(min_length=1, max_length=500)
    reason: str = Field(default="", max_length=40)


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = UserRegistered | UserBlocked | UserUnblocked | UserDeregistered | SessionRevoked | SendSms

TOPICS: dict[str, Topic] = {
    "user.user.registered": Topic.USERS,
    "user.user.blocked": Topic.USERS,
    "user.user.unblocked": Topic.USERS,
    "user.user.deregistered": Topic.USERS,
    "user.session.revoked": Topic.SESSIONS,
    "user.send_sms": Topic.USER_COMMANDS,  # key: user_id
}
