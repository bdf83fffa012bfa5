import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from pydantic import ValidationError

from contracts import ALL_TOPICS, Envelope, Topic, event_adapter, new_event
from contracts.envelope import UPCASTERS
from contracts.events import TOPIC_BY_TYPE, BankReturned, ChargeRequested, EventData
from contracts.mqtt import (
    MAX_PAYLOAD_BYTES,
    Eject,
    ReturnReport,
    UpChannel,
    cmd_topic,
    down_message_adapter,
    parse_up_topic,
    up_message_adapter,
    up_topic,
)
from contracts.schemas import DEFAULT_OUT, build_schemas, render


def _returned() -> BankReturned:
    now = datetime.now(UTC)
    return BankReturned(
        report_id="m1",
        bank_id="PB-000001",
        cabinet_id="CAB-0001",
        slot=3,
        battery_pct=80,
        returned_at=now,
        device_reported_at=now,
        received_at=now,
    )


def test_envelope_round_trips_through_the_one_adapter() -> None:
    envelope = new_event(_returned(), key="PB-000001", producer="device-svc", correlation_id="c1")
    parsed = event_adapter.validate_json(envelope.to_bytes())
    assert parsed == envelope
    assert isinstance(parsed.data, BankReturned)
    assert parsed.topic.value == "device.returns.v1"


def test_every_event_type_has_a_topic_and_every_topic_is_named_by_convention() -> None:
    union_types = {m.model_fields["type"].default for m in EventData.__args__[0].__args__}  # type: ignore[attr-defined]
    assert union_types == set(TOPIC_BY_TYPE)
    for topic in ALL_TOPICS:
        domain, entity, version = topic.split(".")
        assert domain and entity and version.startswith("v") and version[1:].isdigit()


def test_envelope_refuses_a_type_that_does_not_match_its_data() -> None:
    raw = json.loads(new_event(_returned(), key="k", producer="p").to_bytes())
    raw["type"] = "billing.rental.ended"
    with pytest.raises(ValidationError):
        event_adapter.validate_python(raw)


def test_envelope_refuses_unknown_types_and_naive_times() -> None:
    raw = json.loads(new_event(_returned(), key="k", producer="p").to_bytes())
    bad_type = {**raw, "type": "nope", "data": {**raw["data"], "type": "nope"}}
    with pytest.raises(ValidationError):
        event_adapter.validate_python(bad_type)
    naive = {**raw, "occurred_at": "2026-01-01T00:00:00"}
    with pytest.raises(ValidationError):
        event_adapter.validate_python(naive)


def test_upcaster_turns_an_old_version_into_the_current_shape() -> None:
    charge = ChargeRequested(charge_id=uuid4(), rental_id=uuid4(), user_id=uuid4(), amount_fen=300)
    raw = json.loads(new_event(charge, key="k", producer="p").to_bytes())
    old = {**raw, "version": 0, "data": {**raw["data"], "amount_yuan": 3}}
    del old["data"]["amount_fen"]

    def v0_to_v1(event: dict) -> dict:
        data = dict(event["data"])
        data["amount_fen"] = data.pop("amount_yuan") * 100
        return {**event, "version": 1, "data": data}

    UPCASTERS[("billing.charge.requested", 0)] = v0_to_v1
    try:
        parsed = event_adapter.validate_python(old)
    finally:
        del UPCASTERS[("billing.charge.requested", 0)]
    assert isinstance(parsed.data, ChargeRequested)
    assert parsed.data.amount_fen == 300


def test_money_is_integer_fen() -> None:
    with pytest.raises(ValidationError):
        ChargeRequested(charge_id=uuid4(), rental_id=uuid4(), user_id=uuid4(), amount_fen=1.5)  # type: ignore[arg-type]


def test_mqtt_topics_parse_and_refuse_foreign_shapes() -> None:
    assert parse_up_topic(up_topic("CAB-1", UpChannel.RETURN)) == ("CAB-1", "return")
    assert parse_up_topic(cmd_topic("CAB-1")) is None
    assert parse_up_topic("pb/v1/devices/CAB-1/up/return/extra") is None
    assert parse_up_topic("other/v1/devices/CAB-1/up/return") is None


def test_mqtt_messages_validate_strictly() -> None:
    ok = up_message_adapter.validate_json(b'{"type":"return","msg_id":"1","ts":5,"slot":2,"bank_id":"PB-1"}')
    assert isinstance(ok, ReturnReport)
    for bad in (
        b'{"type":"return","msg_id":"1","ts":5,"slot":0,"bank_id":"PB-1"}',
        b'{"type":"return","msg_id":"1","ts":5,"slot":2,"bank_id":"PB/1"}',
        b'{"type":"return","msg_id":"1","ts":5,"slot":2,"bank_id":"PB-1","extra":1}',
        b'{"type":"teleport","msg_id":"1","ts":5}',
        b'{"type":"return","v":2,"msg_id":"1","ts":5,"slot":2,"bank_id":"PB-1"}',
        b"not json",
    ):
        with pytest.raises(ValidationError):
            up_message_adapter.validate_json(bad)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    eject = Eject(cmd_id="c", issued_at=now_ms, expires_at=now_ms + int(timedelta(seconds=4).total_seconds() * 1000))
    assert down_message_adapter.validate_json(eject.model_dump_json()) == eject
    assert MAX_PAYLOAD_BYTES >= 4096


def test_committed_json_schemas_match_the_models() -> None:
    stale = [
        name
        for name, schema in build_schemas().items()
        if not (DEFAULT_OUT / name).exists() or (DEFAULT_OUT / name).read_text(encoding="utf-8") != render(schema)
    ]
    assert not stale, f"run `python -m contracts.schemas` to refresh: {stale}"


def test_envelope_schema_is_exported() -> None:
    assert "data" in Envelope.model_json_schema()["properties"]


def test_the_asyncapi_document_is_current_and_complete() -> None:
    """The data team's AsyncAPI 3 document: committed equal to the models, every topic a channel with its
    key, every event a message on its topic's channel, every reference resolvable, and a real envelope
    valid against its message's schema."""
    import jsonschema_rs

    from contracts.asyncapi import DEFAULT_OUT, build, render
    from contracts.topics import TOPIC_KEYS

    document = build()
    assert DEFAULT_OUT.read_text(encoding="utf-8") == render(document), "run `python -m contracts.asyncapi`"
    assert document["asyncapi"] == "3.0.0"
    channels = {c["address"]: c for c in document["channels"].values()}
    assert set(channels) == set(ALL_TOPICS) and set(TOPIC_KEYS) == set(Topic)
    for event_type, topic in TOPIC_BY_TYPE.items():
        message_id = event_type.replace(".", "_")
        assert message_id in channels[topic.value]["messages"], event_type
        assert document["components"]["messages"][message_id]["bindings"]["kafka"]["key"]["description"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in set(refs(document)):
        target: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{ref} does not resolve"
            target = target[part]

    payload = document["components"]["messages"]["device_bank_returned"]["payload"]
    validator = jsonschema_rs.validator_for({**payload, "components": document["components"]})
    assert validator.is_valid(json.loads(new_event(_returned(), key="PB-000001", producer="device-svc").to_bytes()))
    ended = json.loads(new_event(_returned(), key="PB-000001", producer="device-svc").to_bytes())
    ended["data"]["slot"] = "not a slot"
    assert not validator.is_valid(ended)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "status", "online": "no"},
        {"type": "status", "online": 0},
        {"type": "status", "online": True, "v": True},
        {"type": "status", "online": True, "v": 1.0},
        {"type": "heartbeat", "msg_id": "m1", "ts": "1764070000123"},
        {"type": "heartbeat", "msg_id": "m1", "ts": 1764070000123.0},
        {"type": "heartbeat", "msg_id": 7, "ts": 1764070000123},
        {"type": "return", "msg_id": "m1", "ts": 1, "slot": "3", "bank_id": "B-1"},
        {"type": "inventory", "msg_id": "m1", "ts": 1, "slots": [{"slot": 1, "locked": "true"}]},
        {"type": "bank_report", "msg_id": "m1", "ts": 1, "position": {"lat": "31.2", "lon": 121.4}},
    ],
)
def test_device_messages_are_parsed_strictly(payload: dict[str, object]) -> None:
    """Issue 14: a wrong JSON type is refused, never coerced (`"no"` is not false, `true` is not 1)."""
    with pytest.raises(ValidationError):
        up_message_adapter.validate_json(json.dumps(payload))


def test_strict_parsing_still_takes_well_typed_messages() -> None:
    report = up_message_adapter.validate_json(
        json.dumps({"type": "bank_report", "msg_id": "m1", "ts": 1, "position": {"lat": 31, "lon": 121.4}})
    )
    assert report.type == "bank_report" and report.position is not None and report.position.lat == 31.0
    assert up_message_adapter.validate_json(b'{"type": "status", "online": false, "v": 1}').online is False
