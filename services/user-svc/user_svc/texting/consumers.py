"""`user.send_sms` commands (from notify-svc: a critical message no phone received by push): user-svc
alone holds phone numbers, so it texts the user through its SMS provider. At least once: a crash between
the provider's acceptance and the commit of the processed event id sends the text again."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope, Topic
from contracts.events import SendSms
from kit.app import ConsumerSpec, Runtime
from user_svc.codes.provider import DeliveryFailed, MessageProvider
from user_svc.context import UserServiceContext
from user_svc.models import User

log = logging.getLogger(__name__)


class SmsCommands:
    def __init__(self, provider: MessageProvider) -> None:
        self._provider = provider

    async def on_send_sms(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, SendSms)
        user = await session.get(User, data.user_id)
        if user is None or user.deregistered_at is not None:
            log.info("text not sent: no such user", extra={"user_id": str(data.user_id)})
            return
        try:
            await self._provider.send(channel="sms", destination=user.phone, body=data.text, code="")
        except DeliveryFailed:
            # The provider refused it: retrying the event would not change that; notify-svc keeps the message.
            log.warning("text to the user not delivered", extra={"user_id": str(data.user_id), "reason": data.reason})


def consumer_spec(runtime: Runtime) -> ConsumerSpec:
    context = runtime.extras["user_svc"]
    assert isinstance(context, UserServiceContext)
    return ConsumerSpec(
        topics=[Topic.USER_COMMANDS],
        handlers={"user.send_sms": SmsCommands(context.provider).on_send_sms},
        name="texts",
    )
