"""The correlation id that follows one user action from HTTP to Kafka to MQTT and back."""

from contextvars import ContextVar
from uuid import uuid4

HEADER = "X-Correlation-ID"
_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def get_correlation_id() -> str | None:
    return _current.get()


def set_correlation_id(value: str | None) -> None:
    _current.set(value)


def new_correlation_id() -> str:
    return uuid4().hex


def ensure_correlation_id() -> str:
    value = _current.get()
    if value is None:
        value = new_correlation_id()
        _current.set(value)
    return value


# Where the current request came from, by the rule the rate limits use (kit.addresses: X-Forwarded-For
# only from a trusted proxy): the audit trail's "from where" (kit.audit).
_client_address: ContextVar[str | None] = ContextVar("client_address", default=None)


def get_client_address() -> str | None:
    return _client_address.get()


def set_client_address(value: str | None) -> None:
    _client_address.set(value)
