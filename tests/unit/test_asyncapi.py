"""The AsyncAPI document describes every topic with the model its records carry."""

from __future__ import annotations

from typing import Any

import pytest

from campaign_manager.asyncapi import asyncapi_document
from campaign_manager.contracts import CampaignEventMessage
from campaign_manager.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def message_of(document: dict[str, Any], address: str) -> dict[str, Any]:
    (channel,) = (c for c in document["channels"].values() if c["address"] == address)
    (reference,) = (m["$ref"] for m in channel["messages"].values())
    return resolve(document, reference)


def resolve(document: dict[str, Any], reference: str) -> Any:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []


def test_every_topic_is_a_channel_with_its_direction(document: dict[str, Any]) -> None:
    actions = {
        resolve(document, operation["channel"]["$ref"])["address"]: operation["action"]
        for operation in document["operations"].values()
    }

    assert actions == {
        "trade-signals": "receive",
        "trade-signals.dlq": "send",
        "position-events": "receive",
        "position-events.dlq": "send",
        "trading-ranges": "receive",
        "trading-ranges.dlq": "send",
        "market-prices": "receive",
        "market-prices.dlq": "send",
        "campaign-events": "send",
    }


def test_each_topic_names_the_model_of_its_records(document: dict[str, Any]) -> None:
    assert message_of(document, "trade-signals")["payload"] == {"$ref": "#/components/schemas/TradeSignalMessage"}
    assert message_of(document, "position-events")["payload"] == {"$ref": "#/components/schemas/PositionEventMessage"}
    assert message_of(document, "trading-ranges")["payload"] == {
        "$ref": "#/components/schemas/TradingRangeEventMessage"
    }
    assert message_of(document, "market-prices")["payload"] == {"$ref": "#/components/schemas/MarketPriceMessage"}
    assert message_of(document, "campaign-events")["payload"] == {"$ref": "#/components/schemas/CampaignEventMessage"}
    assert resolve(document, message_of(document, "trade-signals.dlq")["payload"]["$ref"])["format"] == "binary"


def test_campaign_events_are_described_as_published_with_decimals_as_strings(document: dict[str, Any]) -> None:
    published = CampaignEventMessage.model_json_schema(mode="serialization")

    assert document["components"]["schemas"]["CampaignEventMessage"]["required"] == published["required"]
    assert document["components"]["schemas"]["CampaignSnapshot"]["properties"]["total_risk"]["type"] == "string"


def test_events_and_dead_letters_document_their_headers(document: dict[str, Any]) -> None:
    assert set(message_of(document, "campaign-events")["headers"]["required"]) == {
        "content-type",
        "event-type",
        "event-id",
    }
    assert "x-dlq-reason" in message_of(document, "trade-signals.dlq")["headers"]["required"]
    assert "x-dlq-reason" in message_of(document, "position-events.dlq")["headers"]["required"]
    assert "x-dlq-reason" in message_of(document, "trading-ranges.dlq")["headers"]["required"]
    assert "x-dlq-reason" in message_of(document, "market-prices.dlq")["headers"]["required"]


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    for reference in references(document):
        assert resolve(document, reference) is not None, reference


def test_the_document_follows_the_configured_topic_names() -> None:
    settings = Settings.model_construct(
        signals_topic="signals-x",
        position_events_topic="positions-x",
        trading_ranges_topic="ranges-x",
        market_prices_topic="prices-x",
        events_topic="events-x",
    )

    addresses = {c["address"] for c in asyncapi_document(settings)["channels"].values()}

    assert addresses == {
        "signals-x",
        "signals-x.dlq",
        "positions-x",
        "positions-x.dlq",
        "ranges-x",
        "ranges-x.dlq",
        "prices-x",
        "prices-x.dlq",
        "events-x",
    }
