from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from user_svc.validators import AdminLogin, NewPassword, PlainText

Role = Literal["super_admin", "operator", "field_maintenance", "support", "finance", "analyst"]


class ReasonIn(BaseModel):
    reason: PlainText = Field(min_length=1, max_length=500)


class AdminUserOut(BaseModel):
    user_id: UUID
    phone: str
    email: str | None
    username: str | None
    display_name: str | None
    masked: bool  # phone, e-mail and names masked (kit.pii); `?reveal=true` with users:pii shows them
    status: str
    registered_at: datetime
    terms_version: str


class NewAdminIn(BaseModel):
    login: AdminLogin
    password: NewPassword
    role: Role
    must_change_password: bool = True


class NewAdminOut(BaseModel):
    admin_id: UUID
    login: str
    role: Role
    must_change_password: bool


class AdminActionOut(BaseModel):
    id: int
    admin_id: UUID
    admin_roles: list[str]
    action: str
    target_type: str
    target_id: str
    reason: str | None
    details: dict[str, Any]
    at: datetime
