"""What user-svc adds to the kit's runtime, built once in the lifespan."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from kit.app import RuntimeDep
from user_svc.codes.provider import MessageProvider
from user_svc.security import Passwords, Tokens
from user_svc.settings import Settings
from user_svc.staff.totp import TotpSecrets
from user_svc.terms.service import Terms

_KEY = "user_svc"


@dataclass(frozen=True)
class UserServiceContext:
    settings: Settings
    passwords: Passwords
    tokens: Tokens
    terms: Terms
    provider: MessageProvider
    totp: TotpSecrets

    def install(self, extras: dict[str, object]) -> None:
        extras[_KEY] = self


def get_context(runtime: RuntimeDep) -> UserServiceContext:
    context = runtime.extras[_KEY]
    assert isinstance(context, UserServiceContext)
    return context


ContextDep = Annotated[UserServiceContext, Depends(get_context)]
