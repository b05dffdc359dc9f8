"""The documents in `schemas/`: JSON Schemas of the wire contracts, generated from the pydantic models; the
AsyncAPI document of the topics; the OpenAPI document of the HTTP API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from campaign_manager.contracts import (
    CampaignEventMessage,
    MarketPriceMessage,
    PositionEventMessage,
    TradeSignalMessage,
    TradingRangeEventMessage,
)


def contract_schemas() -> dict[str, dict[str, Any]]:
    return {
        "trade-signal.schema.json": TradeSignalMessage.model_json_schema(mode="validation"),
        "position-event.schema.json": PositionEventMessage.model_json_schema(mode="validation"),
        "trading-range-event.schema.json": TradingRangeEventMessage.model_json_schema(mode="validation"),
        "market-price.schema.json": MarketPriceMessage.model_json_schema(mode="validation"),
        "campaign-event.schema.json": CampaignEventMessage.model_json_schema(mode="serialization"),
    }


def openapi_document() -> dict[str, Any]:
    from campaign_manager.http.app import create_app
    from campaign_manager.persistence.store import Database

    # Describing the routes runs none of them: the engine is created but never connects.
    return create_app(Database.connect("postgresql+asyncpg://localhost/unused")).openapi()


def documents() -> dict[str, dict[str, Any]]:
    """Every file `make schemas` writes, by name."""
    from campaign_manager.asyncapi import asyncapi_document

    return {**contract_schemas(), "asyncapi.json": asyncapi_document(), "openapi.json": openapi_document()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in documents().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
