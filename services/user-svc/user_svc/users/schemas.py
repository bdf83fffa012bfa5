from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field, StrictBool

from user_svc.validators import DisplayName, NewPassword, Phone


class RegisterUserIn(BaseModel):
    phone: Phone
    password: NewPassword
    terms_version: str = Field(min_length=1, max_length=32)
    terms_accepted: StrictBool = False
    display_name: DisplayName = None


class RegisteredUserOut(BaseModel):
    user_id: UUID
    phone: str
    display_name: str | None
    registered_at: datetime


class UserProfileOut(BaseModel):
    user_id: UUID
    phone: str
    display_name: str | None
    status: str
    registered_at: datetime
    terms_version: str
    terms_accepted_at: datetime
