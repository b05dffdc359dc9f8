"""What a `trading-ranges` record must look like to be applied; anything else is dead-lettered with the reason."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest

from campaign_manager.contracts import TradingRangeEventMessage, TradingRangeEventType
from campaign_manager.examples import range_event, trading_range
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.service.batches import InvalidRecord, ValidRecord
from campaign_manager.service.records import ConsumedRecord


def parse(value: dict[str, Any]) -> ValidRecord[TradingRangeEventMessage] | InvalidRecord:
    record = ConsumedRecord("trading-ranges", 0, 0, uuid4().bytes, json.dumps(value).encode())
    return parse_record(record, TradingRangeEventMessage)


def test_a_range_update_carries_the_levels() -> None:
    parsed = parse(range_event(trading_range(creek="148.00", ice="150.00", jump="156.00", phase="D")))

    assert isinstance(parsed, ValidRecord)
    assert parsed.message.event_type == TradingRangeEventType.RANGE_UPDATED
    assert str(parsed.message.trading_range.ice) == "150.00"
    assert parsed.message.reason is None


def test_an_invalidation_carries_its_reason() -> None:
    parsed = parse(range_event(trading_range(), "RANGE_INVALIDATED", reason="Close below Creek"))

    assert isinstance(parsed, ValidRecord)
    assert parsed.message.reason == "Close below Creek"


@pytest.mark.parametrize(
    ("reason", "fragment"),
    [
        pytest.param(None, "reason is required for RANGE_INVALIDATED", id="missing"),
        pytest.param("", "reason:", id="empty"),
        pytest.param(" \t ", "reason is required for RANGE_INVALIDATED", id="blank"),
        pytest.param("Close\x00below", "reason must not contain NUL characters", id="nul"),
        pytest.param("x" * 501, "reason:", id="too-long"),
    ],
)
def test_an_invalidation_without_a_usable_reason_is_refused(reason: str | None, fragment: str) -> None:
    parsed = parse(range_event(trading_range(), "RANGE_INVALIDATED", reason=reason))

    assert isinstance(parsed, InvalidRecord)
    assert parsed.error_type == "ValidationError"
    assert fragment in parsed.reason


def test_an_occurrence_without_a_timezone_is_refused() -> None:
    event = {**range_event(trading_range()), "occurred_at": "2024-10-15T14:30:00"}

    parsed = parse(event)

    assert isinstance(parsed, InvalidRecord)
    assert "occurred_at" in parsed.reason
