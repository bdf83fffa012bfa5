from typing import Literal
from uuid import UUID

from pydantic import BaseModel

from user_svc.validators import LoginField, PasswordField


class LoginIn(BaseModel):
    login: LoginField
    password: PasswordField


class UserSessionOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user_id: UUID


class AdminSessionOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    admin_id: UUID
    roles: list[str]
