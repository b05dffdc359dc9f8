"""`market-prices` records: the fast path (msgspec) reads every tick exactly as the contract (pydantic) does.

`MarketPriceMessage` is the documented contract; `parse_price_record` takes a shortcut for plainly valid ticks and
leaves everything else to the contract's own check. These tests hold the two together: same acceptance, same
values, same dead-letter reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_manager.contracts import MarketPriceMessage
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.price_parsing import _plain_tick, parse_price_record
from campaign_manager.service.batches import InvalidRecord, ParsedRecord, ValidRecord
from campaign_manager.service.prices import PriceTick
from campaign_manager.service.records import ConsumedRecord
from tests.json_literals import datetimes, prices, symbols, times

TICK = {"symbol": "AAPL", "price": "148.25", "time": "2024-10-15T14:30:00.123456Z"}


def record(value: bytes | None) -> ConsumedRecord:
    return ConsumedRecord(topic="market-prices", partition=0, offset=0, key=b"AAPL", value=value)


def as_contract_reads_it(raw: bytes | None) -> ParsedRecord:
    """What the contract alone makes of the record, in the handler's form."""
    parsed = parse_record(record(raw), MarketPriceMessage)
    if isinstance(parsed, ValidRecord):
        return ValidRecord(parsed.record, PriceTick(parsed.message.symbol, parsed.message.price, parsed.message.time))
    return parsed


def assert_read_alike(raw: bytes | None) -> None:
    fast, contract = parse_price_record(record(raw)), as_contract_reads_it(raw)
    assert type(fast) is type(contract)
    if isinstance(contract, ValidRecord):
        assert fast.message == contract.message
        # Same digits, not only the same value: prices are stored and published as written.
        assert str(fast.message.price) == str(contract.message.price)
        assert fast.message.time.utcoffset() == timedelta(0)
    else:
        assert (fast.reason, fast.error_type) == (contract.reason, contract.error_type)


@pytest.mark.parametrize(
    "tick",
    [
        TICK,
        {**TICK, "price": 148.25},  # a JSON number, read exactly
        {**TICK, "price": 148},
        {**TICK, "price": "0.00000001"},
        {**TICK, "price": "9999999999.99999999"},  # 18 digits, 8 decimals
        {**TICK, "time": "2024-10-15T14:30:00Z"},
        {**TICK, "time": "2024-10-15T10:30:00-04:00"},  # stored as 14:30 UTC
        {**TICK, "symbol": "BRK.B"},
        {**TICK, "venue": "XNAS"},  # unknown fields are ignored
    ],
)
def test_usual_ticks_take_the_fast_path_and_read_as_the_contract_reads_them(tick: dict) -> None:
    raw = json.dumps(tick).encode()

    assert _plain_tick(raw) is not None
    assert_read_alike(raw)


def test_a_tick_with_an_offset_is_stored_in_utc() -> None:
    parsed = parse_price_record(record(json.dumps({**TICK, "time": "2024-10-15T10:30:00-04:00"}).encode()))

    assert isinstance(parsed, ValidRecord)
    assert parsed.message == PriceTick("AAPL", Decimal("148.25"), datetime(2024, 10, 15, 14, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "message has no value (tombstone)"),
        (b"", "message value is empty"),
        (b"  ", "message value is empty"),
        (b"\xff\xfe", "message value is not UTF-8 text: invalid start byte at byte 0"),
        (b"{", None),
        (b"[1]", "message value must be a JSON object, not list"),
        (json.dumps({**TICK, "price": "0"}).encode(), "price: Input should be greater than 0"),
        (json.dumps({**TICK, "price": "-1.5"}).encode(), "price: Input should be greater than 0"),
        (json.dumps({**TICK, "price": "NaN"}).encode(), "price: Input should be a finite number"),
        (
            json.dumps({**TICK, "price": "1.123456789"}).encode(),
            "price: Decimal input should have no more than 8 decimal places",
        ),
        (json.dumps({**TICK, "price": "abc"}).encode(), "price: Input should be a valid decimal"),
        (json.dumps({**TICK, "time": "2024-10-15T14:30:00"}).encode(), "time: Input should have timezone info"),
        (json.dumps({**TICK, "symbol": ""}).encode(), "symbol: String should have at least 1 character"),
        (json.dumps({**TICK, "symbol": "A" * 21}).encode(), "symbol: String should have at most 20 characters"),
        (json.dumps({"symbol": "AAPL", "price": "1"}).encode(), "time: Field required"),
    ],
)
def test_a_record_that_is_no_valid_tick_gets_the_contracts_own_reason(value: bytes | None, reason: str | None) -> None:
    parsed = parse_price_record(record(value))

    assert isinstance(parsed, InvalidRecord)
    if reason is not None:
        assert parsed.reason == reason
    assert_read_alike(value)


# --- the two paths on generated input --------------------------------------------------------------------------

extra_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("symbol", "price", "time")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
        max_leaves=6,
    ),
    max_size=3,
)


@st.composite
def tick_documents(draw: st.DrawFn) -> bytes:
    """JSON text of a tick, written field by field so prices and times can be any literal."""
    fields = {"symbol": json.dumps(draw(symbols)), "price": draw(prices), "time": draw(times)}
    fields = {name: text for name, text in fields.items() if draw(st.integers(0, 30)) > 0}  # now and then missing
    fields |= {json.dumps(name): json.dumps(value) for name, value in draw(extra_fields).items()}
    members = [f"{name if name.startswith(chr(34)) else json.dumps(name)}: {text}" for name, text in fields.items()]
    document = ("{" + ", ".join(draw(st.permutations(members))) + "}").encode()
    if draw(st.integers(0, 20)) == 0:  # now and then, a byte off
        position = draw(st.integers(0, len(document) - 1))
        document = document[:position] + bytes([draw(st.integers(0, 255))]) + document[position + 1 :]
    return document


@st.composite
def plausible_tick_documents(draw: st.DrawFn) -> bytes:
    """Ticks mostly valid, in every form a producer might write them: most take the fast path."""
    price = draw(
        st.decimals(
            min_value=Decimal("-1"), max_value=Decimal("1e11"), allow_nan=False, places=draw(st.integers(0, 10))
        )
    )
    time = draw(datetimes.filter(lambda d: d.tzinfo is not None))
    tick = {
        "symbol": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,21}", fullmatch=True)),
        "price": str(price),
        "time": time.isoformat(timespec=draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]))),
    }
    if draw(st.booleans()):
        tick["time"] = tick["time"].replace("+00:00", "Z")
    raw = json.dumps(tick)
    if draw(st.booleans()):  # the price as a JSON number
        raw = raw.replace(json.dumps(tick["price"]), tick["price"])
    return raw.encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tick_documents())
def test_generated_ticks_read_the_same_by_both_paths(raw: bytes) -> None:
    assert_read_alike(raw)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_tick_documents())
def test_plausible_ticks_read_the_same_by_both_paths(raw: bytes) -> None:
    assert_read_alike(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_read_the_same_by_both_paths(raw: bytes) -> None:
    assert_read_alike(raw)


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m))),
    )
)
def test_any_aware_time_of_the_fast_form_reads_the_same(time: datetime) -> None:
    raw = json.dumps({**TICK, "time": time.isoformat()}).encode()

    assert_read_alike(raw)
    parsed = parse_price_record(record(raw))
    assert isinstance(parsed, ValidRecord) and parsed.message.time == time
