"""JSON Schema export of the contracts, for the data team and device makers.

`python -m contracts.schemas [OUT_DIR]` writes one file per Kafka message and per MQTT message
(default: libs/contracts/schemas/). A test keeps the committed files equal to the models."""

import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from contracts.envelope import Envelope
from contracts.events import EventData
from contracts.mqtt import DownMessage, UpMessage

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "schemas"


def _members(union: Any) -> list[type[BaseModel]]:
    inner = get_args(union)[0]
    return list(get_args(inner))


def build_schemas() -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {"envelope.json": Envelope.model_json_schema()}
    for model in _members(EventData):
        event_type = model.model_fields["type"].default
        files[f"events/{event_type}.json"] = model.model_json_schema()
    for model in _members(UpMessage):
        files[f"mqtt/up/{model.model_fields['type'].default}.json"] = model.model_json_schema()
    for model in _members(DownMessage):
        files[f"mqtt/down/{model.model_fields['type'].default}.json"] = model.model_json_schema()
    files["mqtt/up-message.json"] = TypeAdapter(UpMessage).json_schema()
    files["mqtt/down-message.json"] = TypeAdapter(DownMessage).json_schema()
    return files


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(out: Path) -> list[Path]:
    written = []
    for name, schema in build_schemas().items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in export(out):
        print(path)


if __name__ == "__main__":
    main()
