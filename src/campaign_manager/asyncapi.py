"""The AsyncAPI document of every topic the service reads or writes (`schemas/asyncapi.json`).

FastStream generates it from the worker's own subscribers (`register_consumers`) and from the publishers
declared here. What FastStream cannot see is added afterwards:
- the subscribers' payloads: they take raw records and validate them themselves (messaging/parsing.py), so their
  handler signatures name no model (`_PAYLOADS` names each topic's);
- record keys, headers and the consumer group, which FastStream 0.7.8 does not describe.
"""

from __future__ import annotations

from typing import Any, get_args

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from campaign_manager.app import build_broker, register_consumers
from campaign_manager.contracts import (
    CampaignEventMessage,
    DeadLetterErrorType,
    EventType,
    MarketPriceMessage,
    PositionEventMessage,
    TradeSignalMessage,
    TradingRangeEventMessage,
)
from campaign_manager.persistence.store import Database
from campaign_manager.settings import Settings

TITLE = "campaign-manager"
VERSION = "1.0.0"
DOCUMENTED_SERVER = "localhost:9092"  # the embedded broker of `make run`; elsewhere KAFKA_BOOTSTRAP_SERVERS
_BINDING_VERSION = "0.4.0"  # the Kafka binding version FastStream writes for channels
_UUID = {"type": "string", "format": "uuid"}
_TEXT = {"type": "string"}
_PAYLOADS: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
    "on_trade_signals": (TradeSignalMessage, "validation"),
    "on_position_events": (PositionEventMessage, "validation"),
    "on_trading_ranges": (TradingRangeEventMessage, "validation"),
    "on_market_prices": (MarketPriceMessage, "validation"),
    "to_campaign_events": (CampaignEventMessage, "serialization"),
}


def declare_publishers(broker: KafkaBroker, settings: Settings) -> None:
    """The topics the outbox relay writes. The relay sends through a plain producer, not these publishers: they
    exist to describe the topics."""
    broker.publisher(
        settings.events_topic,
        title="to_campaign_events",
        description="Campaign events, published from the outbox in commit order, at least once; drop repeats by "
        "event_id. Keyed by campaign UUID, so one campaign's events share a partition.",
        schema=CampaignEventMessage,
    )
    broker.publisher(
        settings.signals_dlq_topic,
        title="to_trade_signals_dlq",
        description="Records of the signals topic that are not valid signals: the original key, value and headers, "
        "plus headers saying why and where from.",
        schema=bytes,
    )
    broker.publisher(
        settings.dlq_topic(settings.position_events_topic),
        title="to_position_events_dlq",
        description="Records of the position events topic that are not valid position events: the original key, "
        "value and headers, plus headers saying why and where from.",
        schema=bytes,
    )
    broker.publisher(
        settings.dlq_topic(settings.trading_ranges_topic),
        title="to_trading_ranges_dlq",
        description="Records of the trading ranges topic that are not valid range events: the original key, value "
        "and headers, plus headers saying why and where from.",
        schema=bytes,
    )
    broker.publisher(
        settings.dlq_topic(settings.market_prices_topic),
        title="to_market_prices_dlq",
        description="Records of the market prices topic that are not valid prices: the original key, value and "
        "headers, plus headers saying why and where from.",
        schema=bytes,
    )


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    # model_construct: the documented defaults (topic names, group), whatever this environment sets.
    settings = settings or Settings.model_construct()
    broker = build_broker(settings, DOCUMENTED_SERVER)
    # Handlers never run here: the engine is created but never connects.
    database = Database.connect("postgresql+asyncpg://localhost/unused")
    register_consumers(broker, settings, database)
    declare_publishers(broker, settings)
    document: dict[str, Any] = (
        AsyncAPI(
            broker,
            title=TITLE,
            version=VERSION,
            description="Wyckoff trade signals in, campaign events and dead letters out.",
        )
        .to_specification()
        .to_jsonable()
    )
    _describe_payloads(document)
    _describe_consumed_topics(document, settings)
    _describe_campaign_events(document)
    for channel in document["channels"]:
        if channel.endswith("_dlq"):
            _describe_dead_letters(document, channel)
    document["servers"]["development"]["description"] = "KAFKA_BOOTSTRAP_SERVERS; unset: the embedded broker"
    return document


def _message(document: dict[str, Any], channel: str) -> dict[str, Any]:
    (reference,) = (m["$ref"] for m in document["channels"][channel]["messages"].values())
    return document["components"]["messages"][reference.removeprefix("#/components/messages/")]


def _key(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"kafka": {"key": {**schema, "description": description}, "bindingVersion": _BINDING_VERSION}}


def _headers(properties: dict[str, dict[str, Any]], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, **extra}


def _describe_payloads(document: dict[str, Any]) -> None:
    """Each payload model in the form its readers see. Beyond the subscriber's missing model: FastStream writes
    models as pydantic validates them, but consumers of campaign-events read what the service serialises (decimals
    as strings), the same form as schemas/campaign-event.schema.json."""
    references, definitions = models_json_schema(list(_PAYLOADS.values()), ref_template="#/components/schemas/{model}")
    schemas = document["components"]["schemas"]
    kept = {}
    for channel in document["channels"]:
        message = _message(document, channel)
        if channel in _PAYLOADS:
            message["payload"] = references[_PAYLOADS[channel]]
        else:
            name = message["payload"]["$ref"].removeprefix("#/components/schemas/")
            kept[name] = schemas[name]
    document["components"]["schemas"] = {**definitions["$defs"], **kept}


def _describe_consumed_topics(document: dict[str, Any], settings: Settings) -> None:
    """Each consumed topic's record key, consumer group and correlation id, which FastStream does not describe."""
    consumed = [  # operation, topic, key schema, key description, carries a correlation_id
        ("on_trade_signals", settings.signals_topic, _UUID,
         "The trading range id: a range's signals stay on one partition, in order.", True),
        ("on_position_events", settings.position_events_topic, _UUID,
         "The campaign UUID: a campaign's fills and exits stay in order.", True),
        ("on_trading_ranges", settings.trading_ranges_topic, _UUID,
         "The trading range id, as for its signals: a range's events stay in order.", True),
        ("on_market_prices", settings.market_prices_topic, _TEXT,
         "The symbol: a symbol's prices stay on one partition, in order.", False),
    ]  # fmt: skip
    for operation, topic, key, key_description, correlated in consumed:
        message = _message(document, operation)
        if correlated:
            message["correlationId"] = {"location": "$message.payload#/correlation_id"}
        else:
            del message["correlationId"]  # a price belongs to no conversation
        message["bindings"] = _key(key, key_description)
        document["operations"][operation]["bindings"] = {
            "kafka": {
                "groupId": {"type": "string", "enum": [settings.consumer_group_of(topic)]},
                "bindingVersion": _BINDING_VERSION,
            }
        }


def _describe_campaign_events(document: dict[str, Any]) -> None:
    message = _message(document, "to_campaign_events")
    message["correlationId"] = {"location": "$message.payload#/correlation_id"}
    message["headers"] = _headers(
        {
            "content-type": {"const": "application/json"},
            "event-type": {"enum": list(get_args(EventType))},
            "event-id": {**_UUID, "description": "The payload's event_id."},
        },
        ["content-type", "event-type", "event-id"],
    )
    message["bindings"] = _key(_UUID, "The campaign UUID; the trading range id for a rejection without a campaign.")


def _describe_dead_letters(document: dict[str, Any], channel: str) -> None:
    message = _message(document, channel)
    del message["correlationId"]
    message["contentType"] = "application/octet-stream"
    message["headers"] = _headers(
        {
            "x-dlq-reason": {**_TEXT, "description": "Why, e.g. `entry_price: Input should be greater than 0`."},
            "x-dlq-error-type": {"enum": list(get_args(DeadLetterErrorType))},
            "x-original-topic": _TEXT,
            "x-original-partition": {**_TEXT, "pattern": "^[0-9]+$"},
            "x-original-offset": {**_TEXT, "pattern": "^[0-9]+$"},
        },
        ["x-dlq-reason", "x-dlq-error-type", "x-original-topic", "x-original-partition", "x-original-offset"],
        description="These, and the original record's headers as they were.",
    )
    message["bindings"] = _key({"type": ["string", "null"]}, "The original record's key.")
