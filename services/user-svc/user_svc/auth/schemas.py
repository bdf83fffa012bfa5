from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from user_svc.validators import Code, LoginField, PasswordField, Phone


class LoginIn(BaseModel):
    login: LoginField = Field(description="phone number (E.164), e-mail address or user name")
    password: PasswordField


class AdminLoginIn(BaseModel):
    login: LoginField
    password: PasswordField
    totp_code: str | None = Field(default=None, max_length=10, pattern=r"^\s*[0-9]{6}\s*$")


class SmsLoginIn(BaseModel):
    phone: Phone
    code: Code


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(BaseModel):
    refresh_token: str | None = Field(default=None, min_length=1, max_length=512)


class UserSessionOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user_id: UUID
    terms_update_required: bool = Field(
        default=False,
        description="the user accepted an older terms version; accept the current one (code terms_outdated)",
    )
    current_terms_version: str | None = None


class AdminSessionOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    admin_id: UUID
    roles: list[str]
    session_id: UUID
    # `password_change`, `totp_enrolment`: until done the token has no roles and opens /v1/admin/me only.
    pending: list[str] = []
    # Trade at POST /v1/admin/sessions/refresh before `expires_in` runs out (spent on use); none for a
    # session with something pending.
    refresh_token: str | None = None
    refresh_expires_in: int = 0
