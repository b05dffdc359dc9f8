"""The wire contracts: what a `trade-signals` record must look like, and how campaign events are written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from campaign_manager.contracts import (
    CampaignEventMessage,
    DocumentCache,
    TradeSignalMessage,
    loads_exact,
)
from campaign_manager.domain.campaign import Campaign, human_campaign_id
from campaign_manager.examples import encode, trade_signal, trading_range
from campaign_manager.messaging.signal_parsing import parse_signal_record
from campaign_manager.service.batches import InvalidRecord, ValidRecord
from campaign_manager.service.outgoing import EventSerializer
from campaign_manager.service.records import ConsumedRecord

ERROR_TYPES = {"DecodeError", "ValidationError", "EmptyMessage"}


def spring() -> dict[str, Any]:
    """Spring 148.50, stop 146.50, 1,000 shares: risk (148.50 - 146.50) x 1,000 = 2,000.00."""
    return trade_signal(trading_range(range_id=uuid4()), signal_id=uuid4())


def record(value: bytes | None) -> ConsumedRecord:
    return ConsumedRecord(topic="trade-signals", partition=0, offset=0, key=uuid4().bytes, value=value)


def as_json(signal: dict[str, Any]) -> bytes:
    return json.dumps(signal).encode()


def with_raw(field: str, text: str) -> bytes:
    """The Spring as JSON with `field`'s value replaced by the literal `text`, e.g. an unquoted number."""
    signal = spring()
    raw = json.dumps(signal)
    quoted = f'"{field}": {json.dumps(signal[field])}'
    assert quoted in raw
    return raw.replace(quoted, f'"{field}": {text}').encode()


def changed(**fields: Any) -> bytes:
    return as_json({**spring(), **fields})


def without(name: str) -> bytes:
    signal = spring()
    del signal[name]
    return as_json(signal)


def with_range(**fields: Any) -> bytes:
    signal = spring()
    return as_json({**signal, "trading_range": {**signal["trading_range"], **fields}})


# --- a well-formed signal --------------------------------------------------------------------------------------


def test_valid_signal_round_trips_through_json() -> None:
    signal = spring()
    key, value = encode(signal)

    # The consumer parses the record...
    parsed = parse_signal_record(ConsumedRecord("trade-signals", 0, 0, key, value))
    assert isinstance(parsed, ValidRecord)
    entry = parsed.message.entry

    # ...keeps every field as sent...
    assert str(entry.id) == signal["id"]
    assert entry.symbol == "AAPL"
    assert entry.pattern_type == "SPRING"
    assert entry.entry_price == Decimal("148.50")
    assert entry.risk_amount == Decimal("2000.00")
    assert entry.portfolio_value == Decimal("100000.00")
    assert str(entry.trading_range.id) == signal["trading_range"]["id"] == key.decode()
    assert entry.trading_range.start_time == datetime(2024, 10, 15, 13, 30, tzinfo=UTC)
    # ...as the contract reads it...
    message = TradeSignalMessage.model_validate(loads_exact(value))
    assert message.to_received() == parsed.message

    # ...and what the contract writes back reads as the same message.
    assert TradeSignalMessage.model_validate(loads_exact(message.model_dump_json())) == message


def test_decimals_sent_as_strings_are_kept_exact() -> None:
    signal = trade_signal(trading_range(), entry_price="148.12345678", stop_loss="146.12345678", position_size="1000.5")

    message = TradeSignalMessage.model_validate(signal)

    assert message.entry_price == Decimal("148.12345678")
    # Trailing zeros too: "2001.00", not 2001.0
    assert str(message.risk_amount) == "2001.00"
    assert type(message.position_size) is Decimal


def test_decimals_sent_as_json_numbers_are_kept_exact() -> None:
    # 148.12345678 as a float would be 148.12345677999999...; loads_exact reads it as a Decimal.
    raw = with_raw("entry_price", "148.12345678")
    raw = raw.replace(b'"stop_loss": "146.50"', b'"stop_loss": 146.12345678')
    raw = raw.replace(b'"risk_amount": "2000.00"', b'"risk_amount": 2000.00')

    document = loads_exact(raw)
    message = TradeSignalMessage.model_validate(document)

    assert document["entry_price"] == Decimal("148.12345678")
    assert type(document["entry_price"]) is Decimal
    assert message.entry_price == Decimal("148.12345678")
    assert str(message.stop_loss) == "146.12345678"
    assert str(message.risk_amount) == "2000.00"


def test_loads_exact_refuses_nan_and_infinity() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=f"{constant} is not a number JSON allows"):
            loads_exact(f'{{"entry_price": {constant}}}')


def test_generated_at_without_timezone_is_rejected() -> None:
    signal = {**spring(), "generated_at": "2024-10-16T14:00:00"}

    with pytest.raises(ValidationError) as raised:
        TradeSignalMessage.model_validate(signal)

    assert raised.value.errors()[0]["loc"] == ("generated_at",)


def test_generated_at_with_another_offset_is_converted_to_utc() -> None:
    # 10:00 in New York (UTC-4) is 14:00 UTC
    signal = {**spring(), "generated_at": "2024-10-16T10:00:00-04:00"}

    message = TradeSignalMessage.model_validate(signal)

    assert message.generated_at == datetime(2024, 10, 16, 14, 0, tzinfo=UTC)
    assert message.generated_at.utcoffset() == timedelta(0)
    assert message.generated_at.tzinfo is UTC


def test_range_start_with_another_offset_is_converted_to_utc() -> None:
    # 09:30 at UTC-4 is 13:30 UTC
    range_ = trading_range(start_time=datetime(2024, 10, 15, 9, 30, tzinfo=timezone(timedelta(hours=-4))))

    message = TradeSignalMessage.model_validate(trade_signal(range_))

    assert message.trading_range.start_time == datetime(2024, 10, 15, 13, 30, tzinfo=UTC)
    assert message.trading_range.start_time.tzinfo is UTC


def test_signal_without_portfolio_value_takes_the_configured_default() -> None:
    message = TradeSignalMessage.model_validate(trade_signal(trading_range(), portfolio_value=None))

    assert message.portfolio_value is None
    assert message.to_entry_signal(Decimal("250000.00")).portfolio_value == Decimal("250000.00")
    assert message.to_entry_signal(None).portfolio_value is None


def test_portfolio_value_of_the_signal_wins_over_the_default() -> None:
    message = TradeSignalMessage.model_validate(trade_signal(trading_range(), portfolio_value="100000.00"))

    assert message.to_entry_signal(Decimal("250000.00")).portfolio_value == Decimal("100000.00")


# --- malformed records -----------------------------------------------------------------------------------------

# (value of the record, fragments the reason must contain, error type)
MALFORMED: list[Any] = [
    pytest.param(lambda: b"not json", ["not valid JSON"], "DecodeError", id="not-json"),
    pytest.param(lambda: b'{"id": "\xff"}', ["not UTF-8"], "DecodeError", id="not-utf8"),
    pytest.param(lambda: as_json(spring()).decode().encode("utf-16"), ["not UTF-8"], "DecodeError", id="utf-16"),
    pytest.param(lambda: b"", ["empty"], "EmptyMessage", id="empty"),
    pytest.param(lambda: b" \n\t ", ["empty"], "EmptyMessage", id="only-whitespace"),
    pytest.param(lambda: None, ["tombstone"], "EmptyMessage", id="tombstone"),
    pytest.param(lambda: b"[1, 2]", ["JSON object", "list"], "ValidationError", id="json-array"),
    pytest.param(lambda: b'"a signal"', ["JSON object", "str"], "ValidationError", id="json-string"),
    pytest.param(lambda: b"42", ["JSON object", "int"], "ValidationError", id="json-number"),
    pytest.param(lambda: b"[" * 100_000, ["nested too deeply"], "DecodeError", id="deeply-nested"),
    pytest.param(lambda: without("id"), ["id: Field required"], "ValidationError", id="missing-id"),
    pytest.param(lambda: changed(id="not-a-uuid"), ["id:", "UUID"], "ValidationError", id="bad-uuid"),
    pytest.param(
        lambda: changed(pattern_type="UTAD"), ["pattern_type:", "SPRING"], "ValidationError", id="unknown-pattern"
    ),
    pytest.param(lambda: changed(phase="F"), ["phase:"], "ValidationError", id="bad-phase"),
    pytest.param(
        lambda: changed(entry_price="-148.50"),
        ["entry_price:", "greater than 0"],
        "ValidationError",
        id="negative-price",
    ),
    pytest.param(
        lambda: changed(position_size="0"), ["position_size:", "greater than 0"], "ValidationError", id="zero-size"
    ),
    pytest.param(
        # stop 149.00 above entry 148.50; risk_amount positive so that only the ordering is wrong
        lambda: changed(stop_loss="149.00", risk_amount="500.00"),
        ["stop_loss must be below entry_price"],
        "ValidationError",
        id="stop-above-entry",
    ),
    pytest.param(
        lambda: changed(stop_loss="148.50", risk_amount="1.00"),
        ["stop_loss must be below entry_price"],
        "ValidationError",
        id="stop-equal-entry",
    ),
    pytest.param(
        lambda: changed(target_price="148.50"),
        ["target_price must be above entry_price"],
        "ValidationError",
        id="target-equal-entry",
    ),
    pytest.param(
        lambda: changed(target_price="140.00"),
        ["target_price must be above entry_price"],
        "ValidationError",
        id="target-below-entry",
    ),
    pytest.param(
        # (148.50 - 146.50) x 1,000 = 2,000; 2,100 is 5% off
        lambda: changed(risk_amount="2100.00"),
        ["risk_amount 2100.00 differs", "by more than 1%"],
        "ValidationError",
        id="risk-inconsistent",
    ),
    pytest.param(
        lambda: changed(entry_price="148.500000001"),
        ["entry_price:", "8 decimal places"],
        "ValidationError",
        id="price-nine-decimal-places",
    ),
    pytest.param(
        lambda: changed(risk_amount="2000.001"),
        ["risk_amount:", "2 decimal places"],
        "ValidationError",
        id="money-three-decimal-places",
    ),
    pytest.param(lambda: with_raw("entry_price", "NaN"), ["NaN"], "DecodeError", id="nan-literal"),
    pytest.param(lambda: with_raw("entry_price", "Infinity"), ["Infinity"], "DecodeError", id="infinity-literal"),
    pytest.param(lambda: with_raw("stop_loss", "-Infinity"), ["-Infinity"], "DecodeError", id="minus-infinity"),
    pytest.param(lambda: changed(entry_price="NaN"), ["entry_price:", "finite"], "ValidationError", id="nan-string"),
    pytest.param(
        lambda: changed(generated_at="2024-10-16T14:00:00"),
        ["generated_at:", "timezone"],
        "ValidationError",
        id="naive-datetime",
    ),
    pytest.param(lambda: changed(generated_at="yesterday"), ["generated_at:"], "ValidationError", id="not-a-datetime"),
    pytest.param(
        lambda: with_range(start_time="2024-10-15T13:30:00"),
        ["trading_range.start_time:", "timezone"],
        "ValidationError",
        id="naive-range-start",
    ),
    pytest.param(
        lambda: with_range(symbol="MSFT"),
        ["trading_range.symbol MSFT differs from symbol AAPL"],
        "ValidationError",
        id="range-symbol-mismatch",
    ),
    pytest.param(
        lambda: with_range(timeframe="1h"),
        ["trading_range.timeframe 1h differs from timeframe 1d"],
        "ValidationError",
        id="range-timeframe-mismatch",
    ),
    pytest.param(
        lambda: without("trading_range"), ["trading_range: Field required"], "ValidationError", id="missing-range"
    ),
    pytest.param(lambda: with_range(creek="0"), ["trading_range.creek:"], "ValidationError", id="range-zero-creek"),
    pytest.param(
        lambda: changed(timeframe="15min1"), ["timeframe:", "at most 5"], "ValidationError", id="timeframe-too-long"
    ),
    pytest.param(lambda: changed(symbol=""), ["symbol:"], "ValidationError", id="empty-symbol"),
    pytest.param(lambda: changed(symbol="AA PL"), ["symbol:", "pattern"], "ValidationError", id="symbol-with-space"),
    pytest.param(
        lambda: with_raw("entry_price", "1e400"), ["entry_price:", "18 digits"], "ValidationError", id="huge-exponent"
    ),
    pytest.param(
        lambda: changed(position_size="1" + "0" * 30),
        ["position_size:", "18 digits"],
        "ValidationError",
        id="huge-size",
    ),
    pytest.param(
        # Python refuses to read integers of more than 4,300 digits
        lambda: with_raw("position_size", "1" + "0" * 5000),
        ["not valid JSON", "digits"],
        "DecodeError",
        id="huge-integer",
    ),
    pytest.param(
        lambda: changed(portfolio_value="-1.00"), ["portfolio_value:"], "ValidationError", id="negative-portfolio"
    ),
    pytest.param(
        lambda: changed(portfolio_id="my portfolio"), ["portfolio_id:"], "ValidationError", id="bad-portfolio-id"
    ),
    pytest.param(
        lambda: changed(confidence_score="101"), ["confidence_score:"], "ValidationError", id="confidence-over-100"
    ),
]


@pytest.mark.parametrize(("value", "fragments", "error_type"), MALFORMED)
def test_malformed_record_is_refused_with_a_specific_reason(
    value: Callable[[], bytes | None], fragments: list[str], error_type: str
) -> None:
    parsed = parse_signal_record(record(value()))

    assert isinstance(parsed, InvalidRecord)
    for fragment in fragments:
        assert fragment in parsed.reason
    assert parsed.error_type == error_type
    assert parsed.error_type in ERROR_TYPES
    # The reason fits a Kafka header and a log line.
    assert len(parsed.reason) <= 1000


def test_there_are_at_least_twenty_kinds_of_malformed_record() -> None:
    assert len({param.id for param in MALFORMED}) >= 20


def test_invalid_record_keeps_the_record_it_came_from() -> None:
    original = record(b"not json")

    parsed = parse_signal_record(original)

    assert isinstance(parsed, InvalidRecord)
    assert parsed.record is original


def test_every_problem_of_a_record_is_named() -> None:
    parsed = parse_signal_record(record(changed(entry_price="-1", phase="F")))

    assert isinstance(parsed, InvalidRecord)
    assert "entry_price:" in parsed.reason
    assert "phase:" in parsed.reason


def test_unknown_fields_are_ignored() -> None:
    parsed = parse_signal_record(record(changed(campaign_id="AAPL-2024-10-15", extra={"a": 1})))

    assert isinstance(parsed, ValidRecord)


# --- the 1% risk tolerance -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "risk_amount",
    [
        # (148.50 - 146.50) x 1,000 = 2,000.00; 1% of it is 20.00
        pytest.param("2000.00", id="exact"),
        pytest.param("2010.00", id="half-a-percent-over"),
        pytest.param("1990.00", id="half-a-percent-under"),
        pytest.param("2020.00", id="one-percent-over"),
        pytest.param("1980.00", id="one-percent-under"),
    ],
)
def test_risk_within_one_percent_of_the_prices_is_accepted(risk_amount: str) -> None:
    parsed = parse_signal_record(record(changed(risk_amount=risk_amount)))

    assert isinstance(parsed, ValidRecord)
    assert parsed.message.entry.risk_amount == Decimal(risk_amount)


@pytest.mark.parametrize(
    "risk_amount",
    [
        # 2,000.00 +/- 20.01 is just beyond 1%
        pytest.param("2020.01", id="a-cent-beyond-over"),
        pytest.param("1979.99", id="a-cent-beyond-under"),
        pytest.param("3000.00", id="fifty-percent-over"),
    ],
)
def test_risk_beyond_one_percent_of_the_prices_is_rejected(risk_amount: str) -> None:
    parsed = parse_signal_record(record(changed(risk_amount=risk_amount)))

    assert isinstance(parsed, InvalidRecord)
    assert parsed.error_type == "ValidationError"
    # The expected risk is written out in plain digits, not as 2E+3.
    expected = (
        f"risk_amount {risk_amount} differs from (entry_price - stop_loss) x position_size = 2000 by more than 1%"
    )
    assert expected in parsed.reason


# --- campaign events -------------------------------------------------------------------------------------------


def test_campaign_event_json_writes_decimals_as_strings() -> None:
    # A campaign opened by the Spring: 2,000.00 at risk of 100,000.00 is 2.0000%
    now = datetime(2024, 10, 16, 14, 0, tzinfo=UTC)
    signal = TradeSignalMessage.model_validate(spring())
    campaign = Campaign.open(
        signal.to_entry_signal(None), human_campaign_id("AAPL", signal.trading_range.start_time, ()), now
    )
    # The event exactly as the service writes it to the outbox.
    (message,) = EventSerializer("campaign-events", DocumentCache()).campaign_events(
        campaign.collect_events(), campaign, causation_id=signal.id, correlation_id=None, now=now
    )
    text = message.payload.decode()
    CampaignEventMessage.model_validate_json(text)  # it is what the published contract says

    # The text itself carries the decimals quoted, digit for digit.
    assert '"entry_price":"148.50"' in text
    assert '"risk_amount":"2000.00"' in text
    assert '"total_allocation":"2.0000"' in text
    assert '"total_pnl":"0.00"' in text
    assert '"current_pnl":"0.00"' in text
    # No number in it has a fraction or an exponent: decoding with floats refused finds none.
    document = json.loads(text, parse_float=_refuse_float)
    snapshot = document["campaign"]
    for name in ("total_risk", "total_allocation", "current_risk", "weighted_avg_entry", "total_shares", "total_pnl"):
        assert isinstance(snapshot[name], str), name
    for view in (snapshot["positions"][0], document["details"]["position"]):
        for name in ("entry_price", "shares", "stop_loss", "target_price", "current_price", "current_pnl"):
            assert isinstance(view[name], str), name
        assert Decimal(view["allocation_percent"]) == Decimal("2")
    # Integers stay integers; datetimes are UTC.
    assert document["campaign_version"] == 1
    assert document["schema_version"] == 1
    assert document["occurred_at"] == "2024-10-16T14:00:00Z"


def _refuse_float(text: str) -> Any:
    raise AssertionError(f"a JSON number with a fraction or exponent: {text}")
