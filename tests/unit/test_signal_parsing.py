"""`trade-signals` records: the fast path (msgspec) reads every signal exactly as the contract (pydantic) does.

`TradeSignalMessage` is the documented contract; `parse_signal_record` takes a shortcut for plainly valid signals
and leaves everything else to the contract's own check. These tests hold the two together: same acceptance, same
values (digit for digit), same dead-letter reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign_manager.contracts import TradeSignalMessage
from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.signal_parsing import _plain_signal, parse_signal_record
from campaign_manager.service.batches import InvalidRecord, ParsedRecord, ValidRecord
from campaign_manager.service.records import ConsumedRecord
from tests.json_literals import prices, symbols, times
from tests.malformed import malformed_signals

SIGNAL = trade_signal(trading_range())


def record(value: bytes | None) -> ConsumedRecord:
    return ConsumedRecord(topic="trade-signals", partition=0, offset=0, key=b"range", value=value)


def as_contract_reads_it(raw: bytes | None) -> ParsedRecord:
    """What the contract alone makes of the record, in the handler's form."""
    parsed = parse_record(record(raw), TradeSignalMessage)
    if isinstance(parsed, ValidRecord):
        return ValidRecord(parsed.record, parsed.message.to_received())
    return parsed


def assert_read_alike(raw: bytes | None) -> None:
    fast, contract = parse_signal_record(record(raw)), as_contract_reads_it(raw)
    assert type(fast) is type(contract)
    if isinstance(contract, ValidRecord):
        assert fast.message == contract.message
        # Same digits, not only the same values: prices and money are stored and published as written.
        assert repr(fast.message) == repr(contract.message)
    else:
        assert (fast.reason, fast.error_type) == (contract.reason, contract.error_type)


def changed(signal: dict = SIGNAL, **fields: Any) -> bytes:
    return json.dumps({**signal, **fields}).encode()


def with_range(**fields: Any) -> bytes:
    return changed(trading_range={**SIGNAL["trading_range"], **fields})


@pytest.mark.parametrize(
    "raw",
    [
        *(json.dumps(s).encode() for s in aapl_campaign_signals()),  # the story's Spring, SOS and LPS
        changed(entry_price=148.5, stop_loss=146.5, position_size=1000, risk_amount=2000),  # JSON numbers
        changed(portfolio_value=None),  # left to the service's PORTFOLIO_VALUE
        json.dumps({k: v for k, v in SIGNAL.items() if k not in ("portfolio_value", "portfolio_id")}).encode(),
        changed(confidence_score="87.5", correlation_id="req-42"),
        changed(confidence_score=0),
        changed(confidence_score=100),
        changed(generated_at="2024-10-16T10:30:00-04:00"),  # stored as 14:30 UTC
        changed(generated_at="2024-10-16T14:30:00.123456Z"),
        changed(entry_price="148.12345678", stop_loss="146.12345678", risk_amount="2000.00"),
        changed(risk_amount="2019.99"),  # within 1% of (entry - stop) x size
        changed(portfolio_id="desk-1:swing.A_2"),
        changed(symbol="BRK.B", trading_range={**SIGNAL["trading_range"], "symbol": "BRK.B"}),
        changed(id=SIGNAL["id"].upper()),
        changed(venue="XNAS"),  # unknown fields are ignored
        with_range(start_time="2024-10-15T09:30:00-04:00"),
    ],
)
def test_usual_signals_take_the_fast_path_and_read_as_the_contract_reads_them(raw: bytes) -> None:
    assert _plain_signal(raw) is not None
    assert_read_alike(raw)


@pytest.mark.parametrize(
    "raw",
    [
        changed(entry_price="1.5E+2"),  # valid, in a less usual form: the contract reads it
        changed(generated_at=1729000000),
        changed(id="{" + SIGNAL["id"] + "}"),
        json.dumps({**SIGNAL, "correlation_id": "é"}, ensure_ascii=False).encode(),  # not ASCII
        changed(portfolio_value="12345678901.00"),  # beyond the contract's digits: its reason
        changed(risk_amount="2100.00"),  # more than 1% off
        changed(stop_loss="150.00"),
        changed(target_price="148.00"),
        changed(confidence_score="100.5"),
        changed(correlation_id="x" * 129),
        changed(portfolio_id=""),
        changed(portfolio_id=None),
        changed(timeframe="1dd"),
        with_range(symbol="MSFT"),
        with_range(timeframe="4h"),
        with_range(creek="0"),
    ],
)
def test_unusual_or_invalid_signals_are_left_to_the_contract(raw: bytes) -> None:
    assert _plain_signal(raw) is None
    assert_read_alike(raw)


@pytest.mark.parametrize("malformed", malformed_signals(), ids=lambda m: m.kind)
def test_every_malformed_kind_gets_the_contracts_own_reason(malformed: Any) -> None:
    parsed = parse_signal_record(record(malformed.value))

    assert isinstance(parsed, InvalidRecord)
    assert parsed.error_type == malformed.error_type
    assert malformed.reason in parsed.reason
    assert_read_alike(malformed.value)


# --- the two paths on generated input --------------------------------------------------------------------------

_DECIMAL_FIELDS = ("entry_price", "stop_loss", "target_price", "position_size", "risk_amount", "portfolio_value")
_RANGE_FIELDS = ("creek", "ice", "jump")
strings = st.one_of(symbols, st.sampled_from(["1d", "15m", "1000d", "d", "", "default", "a" * 64, "a" * 65]))
ids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex), st.text(max_size=40))


@st.composite
def signal_documents(draw: st.DrawFn) -> bytes:
    """A valid signal with one or two of its fields written as any literal: most are refused, some read anew."""
    fields = {name: json.dumps(value) for name, value in SIGNAL.items() if name != "trading_range"}
    range_fields = {name: json.dumps(value) for name, value in SIGNAL["trading_range"].items()}
    for _ in range(draw(st.integers(1, 2))):
        target = draw(st.sampled_from([fields, range_fields]))
        name = draw(st.sampled_from([*sorted(target), "confidence_score", "correlation_id"]))
        if name in _DECIMAL_FIELDS + _RANGE_FIELDS + ("confidence_score",):
            target[name] = draw(prices)
        elif name in ("generated_at", "start_time"):
            target[name] = draw(times)
        elif name == "id":
            target[name] = json.dumps(draw(ids))
        else:
            target[name] = json.dumps(draw(st.one_of(strings, st.none())))
    members = [f"{json.dumps(k)}: {v}" for k, v in range_fields.items()]
    fields["trading_range"] = "{" + ", ".join(members) + "}"
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signal_documents())
def test_generated_signals_read_the_same_by_both_paths(raw: bytes) -> None:
    assert_read_alike(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_read_the_same_by_both_paths(raw: bytes) -> None:
    assert_read_alike(raw)
