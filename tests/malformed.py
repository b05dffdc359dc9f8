"""Records that are not valid messages of a consumed topic, twenty kinds per topic, each with the dead letter it must
become: its `x-dlq-error-type` and a part of its `x-dlq-reason`.

Each function builds fresh records (new ids where a record carries one), so a test may send many of each kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from campaign_manager.examples import position_event, range_event, trade_signal, trading_range


@dataclass(frozen=True)
class Malformed:
    kind: str
    value: bytes | None
    error_type: str  # the dead letter's x-dlq-error-type
    reason: str  # a part of its x-dlq-reason
    headers: tuple[tuple[str, bytes], ...] = ()


def malformed_signals() -> list[Malformed]:
    """`trade-signals`: broken bytes, then well-formed JSON that breaks the signal's rules of shape."""
    range_ = trading_range()

    def signal(**changes: Any) -> bytes:
        return json.dumps({**trade_signal(range_), **changes}).encode()

    without_id = trade_signal(range_)
    del without_id["id"]
    return [
        Malformed("not JSON", b"{not json", "DecodeError", "not valid JSON"),
        Malformed("not UTF-8", b"\xff\xfe\x00garbage", "DecodeError", "UTF-8"),
        Malformed("empty value", b"", "EmptyMessage", "empty"),
        Malformed("tombstone", None, "EmptyMessage", "tombstone"),
        Malformed("JSON array", b"[1, 2, 3]", "ValidationError", "must be a JSON object, not list"),
        Malformed("JSON string", b'"a signal"', "ValidationError", "must be a JSON object, not str"),
        Malformed("JSON number", b"42", "ValidationError", "must be a JSON object, not int"),
        Malformed("NaN literal", b'{"entry_price": NaN}', "DecodeError", "NaN is not a number JSON allows"),
        Malformed("empty object", b"{}", "ValidationError", "id: Field required"),
        Malformed("non-UTF-8 header", b"{}", "ValidationError", "id: Field required", (("trace", b"\xff\xfe"),)),
        Malformed("missing id", json.dumps(without_id).encode(), "ValidationError", "id: Field required"),
        Malformed("bad uuid", signal(id="not-a-uuid"), "ValidationError", "id: Input should be a valid UUID"),
        Malformed("unknown pattern", signal(pattern_type="UTAD"), "ValidationError", "pattern_type: Input should be"),
        Malformed("bad phase", signal(phase="Z"), "ValidationError", "phase: Input should be"),
        Malformed(
            "negative entry", signal(entry_price="-1"), "ValidationError", "entry_price: Input should be greater than 0"
        ),
        Malformed(
            "zero size", signal(position_size="0"), "ValidationError", "position_size: Input should be greater than 0"
        ),
        Malformed(
            "stop above entry",
            signal(stop_loss="149.00", risk_amount="500.00"),
            "ValidationError",
            "stop_loss must be below entry_price",
        ),
        Malformed(
            "target below entry",
            signal(target_price="140.00"),
            "ValidationError",
            "target_price must be above entry_price",
        ),
        Malformed(
            "inconsistent risk",
            signal(risk_amount="900.00"),
            "ValidationError",
            "risk_amount 900.00 differs from (entry_price - stop_loss) x position_size",
        ),
        Malformed(
            "naive datetime",
            signal(generated_at="2024-10-15T10:30:00"),
            "ValidationError",
            "generated_at: Input should have timezone info",
        ),
    ]


def price_tick(symbol: str, price: Any, **changes: Any) -> bytes:
    """A `market-prices` value: `symbol` traded at `price` now."""
    return json.dumps({"symbol": symbol, "price": price, "time": datetime.now(UTC).isoformat(), **changes}).encode()


def malformed_prices(symbol: str) -> list[Malformed]:
    """`market-prices`: ticks of `symbol` (or of no valid symbol) that are not valid prices."""
    return [
        Malformed("not JSON", b"{not json", "DecodeError", "not valid JSON"),
        Malformed("not UTF-8", b"\xff\xfe\x00garbage", "DecodeError", "UTF-8"),
        Malformed("empty value", b"", "EmptyMessage", "empty"),
        Malformed("tombstone", None, "EmptyMessage", "tombstone"),
        Malformed("JSON array", b"[1, 2, 3]", "ValidationError", "JSON object"),
        Malformed("JSON number", b"42", "ValidationError", "JSON object"),
        Malformed("NaN literal", b'{"symbol": "X", "price": NaN}', "DecodeError", "NaN"),
        Malformed("empty object", b"{}", "ValidationError", "symbol: Field required"),
        Malformed(
            "no price",
            json.dumps({"symbol": symbol, "time": "2024-10-15T14:30:00Z"}).encode(),
            "ValidationError",
            "price: Field required",
        ),
        Malformed(
            "no time",
            json.dumps({"symbol": symbol, "price": "150"}).encode(),
            "ValidationError",
            "time: Field required",
        ),
        Malformed("zero price", price_tick(symbol, "0"), "ValidationError", "price: Input should be greater than 0"),
        Malformed(
            "negative price", price_tick(symbol, "-148.50"), "ValidationError", "price: Input should be greater than 0"
        ),
        Malformed("price NaN", price_tick(symbol, "NaN"), "ValidationError", "price: Input should be a finite number"),
        Malformed(
            "price text", price_tick(symbol, "a lot"), "ValidationError", "price: Input should be a valid decimal"
        ),
        Malformed(
            "price boolean",
            price_tick(symbol, True),
            "ValidationError",
            "price: Decimal input should be an integer, float, string or Decimal",
        ),
        Malformed(
            "9 decimals",
            price_tick(symbol, "148.123456789"),
            "ValidationError",
            "price: Decimal input should have no more than 8 decimal",
        ),
        Malformed(
            "naive time",
            price_tick(symbol, "150", time="2024-10-15T14:30:00"),
            "ValidationError",
            "time: Input should have timezone info",
        ),
        Malformed(
            "time text",
            price_tick(symbol, "150", time="yesterday"),
            "ValidationError",
            "time: Input should be a valid datetime",
        ),
        Malformed(
            "symbol too long",
            price_tick("S" * 21, "150"),
            "ValidationError",
            "symbol: String should have at most 20 characters",
        ),
        Malformed(
            "symbol with space", price_tick("AA PL", "150"), "ValidationError", "symbol: String should match pattern"
        ),
    ]


def malformed_range_events() -> list[Malformed]:
    """`trading-ranges`: range events that are not valid messages (of a fresh range)."""
    range_ = trading_range()
    good = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek")

    def changed(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    def without(name: str) -> bytes:
        return json.dumps({k: v for k, v in good.items() if k != name}).encode()

    def with_range(**changes: Any) -> bytes:
        return changed(trading_range={**range_, **changes})

    return [
        Malformed("not JSON", b"{not json", "DecodeError", "not valid JSON"),
        Malformed("not UTF-8", b"\xff\xfe\x00garbage", "DecodeError", "UTF-8"),
        Malformed("empty value", b"", "EmptyMessage", "empty"),
        Malformed("tombstone", None, "EmptyMessage", "tombstone"),
        Malformed("JSON array", b"[1, 2, 3]", "ValidationError", "must be a JSON object"),
        Malformed("JSON string", b'"a range"', "ValidationError", "must be a JSON object"),
        Malformed("NaN literal", b'{"event_id": NaN}', "DecodeError", "not valid JSON"),
        Malformed("empty object", b"{}", "ValidationError", "event_id: Field required"),
        Malformed("missing event id", without("event_id"), "ValidationError", "event_id: Field required"),
        Malformed("bad event id", changed(event_id="not-a-uuid"), "ValidationError", "event_id:"),
        Malformed("unknown event type", changed(event_type="RANGE_MOVED"), "ValidationError", "event_type:"),
        Malformed("missing range", without("trading_range"), "ValidationError", "trading_range: Field required"),
        Malformed(
            "invalidation without reason",
            without("reason"),
            "ValidationError",
            "reason is required for RANGE_INVALIDATED",
        ),
        Malformed("blank reason", changed(reason="   "), "ValidationError", "reason is required for RANGE_INVALIDATED"),
        Malformed(
            "NUL in reason",
            changed(reason="Close\x00below"),
            "ValidationError",
            "reason must not contain NUL characters",
        ),
        Malformed("reason too long", changed(reason="x" * 501), "ValidationError", "reason:"),
        Malformed("naive occurred_at", changed(occurred_at="2024-10-15T14:30:00"), "ValidationError", "occurred_at:"),
        Malformed("negative creek", with_range(creek="-148.00"), "ValidationError", "trading_range.creek:"),
        Malformed("unknown phase", with_range(phase="Z"), "ValidationError", "trading_range.phase:"),
        Malformed("range id not a UUID", with_range(id="range-1"), "ValidationError", "trading_range.id:"),
    ]


def malformed_position_events(campaign_id: str, position_id: str) -> list[Malformed]:
    """`position-events`: events about one position of a campaign that are not valid messages."""

    def event(**changes: Any) -> bytes:
        value = {**position_event(campaign_id, position_id, "FILLED", price="148.50", shares="1000"), **changes}
        return json.dumps({k: v for k, v in value.items() if v is not None}).encode()

    return [
        Malformed("not JSON", b"{not json", "DecodeError", "not valid JSON"),
        Malformed("not UTF-8", b"\xff\xfe\x00garbage", "DecodeError", "not UTF-8"),
        Malformed("empty value", b"", "EmptyMessage", "empty"),
        Malformed("tombstone", None, "EmptyMessage", "tombstone"),
        Malformed("JSON array", b'[{"event_type": "FILLED"}]', "ValidationError", "must be a JSON object, not list"),
        Malformed("NaN literal", b'{"price": NaN}', "DecodeError", "NaN is not a number JSON allows"),
        Malformed("missing event id", event(event_id=None), "ValidationError", "event_id: Field required"),
        Malformed("missing campaign id", event(campaign_id=None), "ValidationError", "campaign_id: Field required"),
        Malformed(
            "bad position id",
            event(position_id="not-a-uuid"),
            "ValidationError",
            "position_id: Input should be a valid UUID",
        ),
        Malformed("unknown event type", event(event_type="OPENED"), "ValidationError", "event_type: Input should be"),
        Malformed("negative price", event(price="-148.50"), "ValidationError", "price: Input should be greater than 0"),
        Malformed("zero shares", event(shares="0"), "ValidationError", "shares: Input should be greater than 0"),
        Malformed(
            "naive datetime",
            event(occurred_at="2024-10-15T10:30:00"),
            "ValidationError",
            "occurred_at: Input should have timezone info",
        ),
        Malformed("FILLED without shares", event(shares=None), "ValidationError", "shares is required for FILLED"),
        Malformed(
            "PARTIALLY_CLOSED without shares",
            event(event_type="PARTIALLY_CLOSED", shares=None),
            "ValidationError",
            "shares is required for PARTIALLY_CLOSED",
        ),
        Malformed(
            "price of the wrong type",
            event(price={"amount": "148.50"}),
            "ValidationError",
            "price: Decimal input should be",
        ),
        Malformed(
            "shares of the wrong type", event(shares=[1000]), "ValidationError", "shares: Decimal input should be"
        ),
        Malformed(
            "huge number",
            event(price="1e30"),
            "ValidationError",
            "price: Decimal input should have no more than 18 digits",
        ),
        Malformed("NaN string", event(price="NaN"), "ValidationError", "price: Input should be a finite number"),
        Malformed(
            "too many decimals",
            event(price="148.123456789"),
            "ValidationError",
            "price: Decimal input should have no more than 8 decimal places",
        ),
    ]
