"""JSON Schemas of the wire contracts, generated from the pydantic models into `schemas/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from campaign_manager.contracts import CampaignEventMessage, TradeSignalMessage


def contract_schemas() -> dict[str, dict[str, Any]]:
    return {
        "trade-signal.schema.json": TradeSignalMessage.model_json_schema(mode="validation"),
        "campaign-event.schema.json": CampaignEventMessage.model_json_schema(mode="serialization"),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in contract_schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
