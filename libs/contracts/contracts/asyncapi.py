"""The data team's contract: an AsyncAPI 3.0 document of every Kafka topic (channel), its message key
and every message's schema (the envelope with that event's `data`), generated from these models.

`python -m contracts.asyncapi [OUT]` writes it (default: libs/contracts/asyncapi.json); a test keeps the
committed file equal to the models."""

import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts.envelope import Envelope
from contracts.events import TOPIC_BY_TYPE, EventData
from contracts.topics import TOPIC_KEYS, Topic

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "asyncapi.json"
REF = "#/components/schemas/{model}"


def _members() -> list[type[BaseModel]]:
    return list(get_args(get_args(EventData)[0]))


def _channel_id(topic: Topic) -> str:
    return topic.name.lower()


def _message_id(event_type: str) -> str:
    return event_type.replace(".", "_")


def build() -> dict[str, Any]:
    members = _members()
    _, top = models_json_schema([(Envelope, "validation"), *((m, "validation") for m in members)], ref_template=REF)
    schemas: dict[str, Any] = dict(sorted(top["$defs"].items()))
    messages: dict[str, Any] = {}
    by_topic: dict[Topic, list[str]] = {}
    for model in members:
        event_type: str = model.model_fields["type"].default
        topic = TOPIC_BY_TYPE[event_type]
        message_id = _message_id(event_type)
        by_topic.setdefault(topic, []).append(message_id)
        messages[message_id] = {
            "name": event_type,
            "title": event_type,
            "summary": (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ") or event_type,
            "contentType": "application/json",
            "payload": {
                "allOf": [
                    {"$ref": REF.format(model="Envelope")},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": REF.format(model=model.__name__)},
                        },
                    },
                ]
            },
            "bindings": {"kafka": {"key": {"type": "string", "description": TOPIC_KEYS[topic]}}},
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in Topic:
        ids = sorted(by_topic.get(topic, []))
        channel_id = _channel_id(topic)
        channels[channel_id] = {
            "address": topic.value,
            "description": f"Kafka topic `{topic.value}`, keyed by {TOPIC_KEYS[topic]}.",
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in ids},
            "bindings": {"kafka": {"topic": topic.value}},
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in ids],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Power bank platform events",
            "version": "1.0.0",
            "description": (
                "Every event and command on Kafka. Each value is a JSON envelope (event id, type, version, "
                "occurred_at, producer, correlation id, key, data); the message key is the envelope's key. "
                "Delivery is at least once: deduplicate on event_id. Money is integer fen; times are UTC."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {"host": "kafka:9092", "protocol": "kafka", "description": "the platform's Kafka cluster"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": dict(sorted(messages.items())), "schemas": schemas},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    out.write_text(render(build()), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
