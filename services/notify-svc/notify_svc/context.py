"""What notify-svc adds to the kit's runtime, built once in the lifespan."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from kit.app import Runtime, RuntimeDep
from kit.periodic import Alarm
from notify_svc.callbacks.provider import TelephonyProvider
from notify_svc.notices.signing import UrlSigner
from notify_svc.push.provider import PushProvider
from notify_svc.settings import Settings

_KEY = "notify_svc"


@dataclass(frozen=True)
class NotifyContext:
    settings: Settings
    signer: UrlSigner
    push_provider: PushProvider
    telephony: TelephonyProvider
    pushes: Alarm  # rung after a commit that queued a push
    campaigns: Alarm  # rung with a campaign's send time once it is scheduled
    held_sms: Alarm  # rung after a campaign batch held marketing SMS for quiet hours

    def install(self, extras: dict[str, object]) -> None:
        extras[_KEY] = self


def context_of(runtime: Runtime) -> NotifyContext:
    context = runtime.extras[_KEY]
    assert isinstance(context, NotifyContext)
    return context


def get_context(runtime: RuntimeDep) -> NotifyContext:
    context = runtime.extras[_KEY]
    assert isinstance(context, NotifyContext)
    return context


ContextDep = Annotated[NotifyContext, Depends(get_context)]
