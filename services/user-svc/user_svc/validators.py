"""The input rules as pydantic types: a broken rule becomes a 422 whose `errors[].type` is its code."""

import unicodedata
from collections.abc import Callable
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from user_svc.rules import (
    RuleViolation,
    check_code,
    check_password,
    normalise_admin_login,
    normalise_display_name,
    normalise_email,
    normalise_phone,
    normalise_username,
)

T = TypeVar("T")
R = TypeVar("R")


def _as_validator(rule: Callable[[T], R]) -> Callable[[T], R]:
    def validate(value: T) -> R:
        try:
            return rule(value)
        except RuleViolation as exc:
            raise PydanticCustomError(exc.code, exc.message) from None

    return validate


Phone = Annotated[
    str, Field(max_length=32, examples=["+8613800138000"]), AfterValidator(_as_validator(normalise_phone))
]
NewPassword = Annotated[str, Field(max_length=1024), AfterValidator(_as_validator(check_password))]
DisplayName = Annotated[
    str | None, Field(default=None, max_length=256), AfterValidator(_as_validator(normalise_display_name))
]
AdminLogin = Annotated[str, Field(max_length=64), AfterValidator(_as_validator(normalise_admin_login))]
# Login inputs are not checked against the rules: a malformed login simply matches nobody.
LoginField = Annotated[str, Field(min_length=1, max_length=320)]
PasswordField = Annotated[str, Field(min_length=1, max_length=1024)]
Email = Annotated[
    str, Field(max_length=320, examples=["name@example.com"]), AfterValidator(_as_validator(normalise_email))
]
Username = Annotated[
    str, Field(max_length=64, examples=["xiaoming"]), AfterValidator(_as_validator(normalise_username))
]
Code = Annotated[str, Field(max_length=16, examples=["123456"]), AfterValidator(_as_validator(check_code))]


def _plain_text(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n" for ch in value):
        raise PydanticCustomError("invalid_characters", "Control characters are not allowed here")
    return value


# Free text that goes to the database: no control characters (PostgreSQL refuses NUL outright).
PlainText = Annotated[str, AfterValidator(_plain_text)]
