from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, Field, StrictBool

from user_svc.validators import Code, DisplayName, Email, NewPassword, PasswordField, Phone, Username


class RegisterUserIn(BaseModel):
    phone: Phone
    sms_code: Code = Field(description="the code from POST /v1/sms-codes with purpose `register`")
    password: NewPassword
    terms_version: str = Field(min_length=1, max_length=32)
    terms_accepted: StrictBool = False
    display_name: DisplayName = None
    birth_date: date | None = Field(default=None, description="optional; checked against the minimum age")


class RegisteredUserOut(BaseModel):
    user_id: UUID
    phone: str
    display_name: str | None
    registered_at: datetime


class UserProfileOut(BaseModel):
    user_id: UUID
    phone: str
    email: str | None
    username: str | None
    display_name: str | None
    status: str
    registered_at: datetime
    terms_version: str
    terms_accepted_at: datetime
    terms_update_required: bool


class ProfilePatchIn(BaseModel):
    display_name: DisplayName = None
    username: Username | None = None


class ChangePasswordIn(BaseModel):
    current_password: PasswordField
    new_password: NewPassword


class BindEmailIn(BaseModel):
    email: Email
    code: Code


class AcceptTermsIn(BaseModel):
    terms_version: str = Field(min_length=1, max_length=32)
    terms_accepted: StrictBool = False


class DeregisterIn(BaseModel):
    password: PasswordField


class DeregisteredOut(BaseModel):
    user_id: UUID
    deregistered_at: datetime
