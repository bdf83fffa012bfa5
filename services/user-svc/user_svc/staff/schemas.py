from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from user_svc.admins.schemas import Role
from user_svc.validators import NewPassword, PasswordField, PlainText


class StaffOut(BaseModel):
    admin_id: UUID
    login: str
    role: str
    status: str  # active | disabled
    must_change_password: bool
    totp_enabled: bool
    totp_required: bool  # the role moves money or sees personal data
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class StaffEntryOut(BaseModel):
    admin_id: UUID
    login: str
    role: str


class RoleIn(BaseModel):
    role: Role
    reason: PlainText = Field(min_length=1, max_length=500)


class TemporaryPasswordOut(BaseModel):
    admin_id: UUID
    temporary_password: str  # shown once; the next sign-in must replace it


class StaffSessionOut(BaseModel):
    session_id: UUID
    restricted: bool
    client_ip: str
    user_agent: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    current: bool = False


class MeOut(StaffOut):
    pending: list[str]


class OwnPasswordIn(BaseModel):
    current_password: PasswordField
    new_password: NewPassword


class TotpEnrolmentOut(BaseModel):
    secret: str  # base32, for typing into an app by hand
    provisioning_uri: str  # otpauth://totp/...: show as a QR code


class TotpCodeIn(BaseModel):
    code: str = Field(pattern=r"^\s*[0-9]{6}\s*$", max_length=10)
