"""The envelope every Kafka message travels in, and the one adapter that parses any of them."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from contracts.events import TOPIC_BY_TYPE, EventData
from contracts.topics import Topic

ENVELOPE_VERSION = 1
# W3C Trace Context (version 00), carried by events and device commands when tracing is on (kit.tracing).
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
Traceparent = Annotated[str, Field(pattern=TRACEPARENT_PATTERN, max_length=55)]


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    type: str
    version: int = ENVELOPE_VERSION
    occurred_at: AwareDatetime
    producer: str
    correlation_id: str | None = None
    traceparent: Traceparent | None = Field(
        default=None, description="The producer's span (W3C traceparent) when tracing is on; absent otherwise"
    )
    key: str = Field(description="Partition key: the id of the entity the event is about")
    data: EventData

    @model_validator(mode="before")
    @classmethod
    def _upcast_and_check_type(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = upcast(raw)
        data = raw.get("data")
        if isinstance(data, dict) and "type" not in data and "type" in raw:
            raw = {**raw, "data": {**data, "type": raw["type"]}}
        return raw

    @model_validator(mode="after")
    def _type_matches_data(self) -> "Envelope":
        if self.type != self.data.type:
            raise ValueError(f"envelope type {self.type!r} does not match data type {self.data.type!r}")
        return self

    @property
    def topic(self) -> Topic:
        return topic_for(self.type)

    def to_bytes(self) -> bytes:
        if self.traceparent is None:  # tracing off: the event's bytes stay as they were
            return self.model_dump_json(exclude={"traceparent"}).encode()
        return self.model_dump_json().encode()


# Breaking changes bump an event's version; an upcaster turns the old shape into the new one
# before validation, keyed by (type, old version). None are needed yet.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    while (step := UPCASTERS.get((raw.get("type", ""), raw.get("version", ENVELOPE_VERSION)))) is not None:
        raw = step(raw)
    return raw


event_adapter: TypeAdapter[Envelope] = TypeAdapter(Envelope)


def topic_for(event_type: str) -> Topic:
    try:
        return TOPIC_BY_TYPE[event_type]
    except KeyError:
        raise ValueError(f"no topic for event type {event_type!r}") from None


def new_event(
    data: EventData,
    *,
    key: str,
    producer: str,
    correlation_id: str | None = None,
    occurred_at: datetime | None = None,
    event_id: UUID | None = None,
    traceparent: str | None = None,
) -> Envelope:
    """`event_id`: a deterministic id for an event that may be published more than once (at least
    once, straight to Kafka), so that its consumers can drop the copies; a random one otherwise."""
    return Envelope(
        event_id=event_id or uuid4(),
        type=data.type,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        correlation_id=correlation_id,
        traceparent=traceparent,
        key=key,
        data=data,
    )
