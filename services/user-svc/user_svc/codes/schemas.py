from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from user_svc.validators import Email, Phone


class SmsCodeIn(BaseModel):
    phone: Phone
    purpose: Literal["register", "login"]


class EmailCodeIn(BaseModel):
    email: Email


class CodeSentOut(BaseModel):
    expires_in: int = Field(description="seconds the code stays valid")
    resend_after: int = Field(description="seconds before another code may be requested")


class DevMessageOut(BaseModel):
    channel: str
    destination: str
    body: str
    code: str | None
    status: str
    created_at: datetime
