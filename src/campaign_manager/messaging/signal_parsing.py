"""`trade-signals` records into `ReceivedSignal`s.

`TradeSignalMessage` is the contract and `parse_record` its full check (JSON with exact decimals, then pydantic):
about 50 µs a signal, the largest single cost of a signal in the worker. So a record is first decoded by msgspec
and taken as it is only when it is plainly valid: ASCII JSON, ids as UUIDs, symbols, timeframes and portfolio ids
of the contract's patterns, prices, sizes and money above 0 within the contract's digits and without an exponent,
times as RFC 3339 with `T` and an offset, prices in order and the risk consistent. Anything else, invalid or valid in
a less usual form (`1E+2`, a numeric timestamp, a UUID in braces), goes through `parse_record`, so what is accepted,
its value and every dead-letter reason stay the contract's own. tests/unit/test_signal_parsing.py holds the two
paths together.
"""

from __future__ import annotations

import re
from decimal import Decimal
from uuid import UUID

import msgspec

from campaign_manager.contracts import ReceivedSignal, TradeSignalMessage, risk_is_consistent
from campaign_manager.domain.campaign import EntrySignal, PatternType, TradingRange, WyckoffPhase
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.plain_values import (
    MONEY,
    PRICE,
    SYMBOL,
    aware_time,
    decimal_form,
    decoded,
    plain_decimal,
    positive_decimal,
)
from campaign_manager.service.batches import ParsedRecord, ValidRecord
from campaign_manager.service.records import ConsumedRecord

_TIMEFRAME = re.compile(r"[0-9]{0,3}[a-zA-Z]{1,2}")
_PORTFOLIO_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONFIDENCE = decimal_form(3, 8)  # 0 to 100
_MAX_CONFIDENCE = Decimal(100)
_MAX_CORRELATION_ID = 128
_NULL = msgspec.Raw(b"null")


class _Range(msgspec.Struct, gc=False):
    id: UUID
    symbol: str
    timeframe: str
    start_time: str  # times and numbers are checked and read below, as the contract reads them
    creek: msgspec.Raw
    ice: msgspec.Raw
    jump: msgspec.Raw
    phase: WyckoffPhase


class _Signal(msgspec.Struct, gc=False):
    id: UUID
    symbol: str
    timeframe: str
    pattern_type: PatternType
    phase: WyckoffPhase
    generated_at: str
    entry_price: msgspec.Raw
    stop_loss: msgspec.Raw
    target_price: msgspec.Raw
    position_size: msgspec.Raw
    risk_amount: msgspec.Raw
    trading_range: _Range
    portfolio_value: msgspec.Raw = _NULL
    portfolio_id: str = "default"
    confidence_score: msgspec.Raw = _NULL
    correlation_id: str | None = None


_decode = msgspec.json.Decoder(_Signal).decode


def _plain_range(r: _Range) -> TradingRange | None:
    start_time = aware_time(r.start_time)
    creek, ice, jump = (positive_decimal(level, PRICE) for level in (r.creek, r.ice, r.jump))
    if start_time is None or creek is None or ice is None or jump is None or not SYMBOL.fullmatch(r.symbol):
        return None
    if not _TIMEFRAME.fullmatch(r.timeframe):
        return None
    return TradingRange(r.id, r.symbol, r.timeframe, start_time, creek, ice, jump, r.phase)


def _plain_signal(value: bytes) -> ReceivedSignal | None:
    """The signal, when `value` is plainly a valid one; None when only the contract's full check can tell."""
    if (s := decoded(_decode, value)) is None:
        return None
    entry, stop, target, size = (
        positive_decimal(raw, PRICE) for raw in (s.entry_price, s.stop_loss, s.target_price, s.position_size)
    )
    risk = positive_decimal(s.risk_amount, MONEY)
    generated_at = aware_time(s.generated_at)
    if entry is None or stop is None or target is None or size is None or risk is None or generated_at is None:
        return None
    if not (stop < entry < target and risk_is_consistent(entry, stop, size, risk)):
        return None  # the contract says which rule it breaks
    portfolio_value = None
    if s.portfolio_value != _NULL and (portfolio_value := positive_decimal(s.portfolio_value, MONEY)) is None:
        return None
    if s.confidence_score != _NULL and not _plain_confidence(s.confidence_score):
        return None
    if s.correlation_id is not None and len(s.correlation_id) > _MAX_CORRELATION_ID:
        return None
    names_plain = SYMBOL.fullmatch(s.symbol) and _TIMEFRAME.fullmatch(s.timeframe)
    if not (names_plain and _PORTFOLIO_ID.fullmatch(s.portfolio_id)):
        return None
    trading_range = _plain_range(s.trading_range)
    if trading_range is None or (trading_range.symbol, trading_range.timeframe) != (s.symbol, s.timeframe):
        return None
    signal = EntrySignal(
        id=s.id,
        portfolio_id=s.portfolio_id,
        symbol=s.symbol,
        timeframe=s.timeframe,
        pattern_type=s.pattern_type,
        phase=s.phase,
        generated_at=generated_at,
        entry_price=entry,
        stop_loss=stop,
        target_price=target,
        shares=size,
        risk_amount=risk,
        portfolio_value=portfolio_value,
        trading_range=trading_range,
    )
    return ReceivedSignal(signal, s.correlation_id)


def _plain_confidence(raw: bytes) -> bool:
    confidence = plain_decimal(raw, _CONFIDENCE)
    return confidence is not None and confidence <= _MAX_CONFIDENCE


def parse_signal_record(record: ConsumedRecord) -> ParsedRecord:
    """A `ReceivedSignal`, or a dead letter whose reason is the contract's (`parse_record`)."""
    if record.value and (signal := _plain_signal(record.value)) is not None:
        return ValidRecord(record, signal)
    parsed = parse_record(record, TradeSignalMessage)
    if isinstance(parsed, ValidRecord):
        return ValidRecord(record, parsed.message.to_received())
    return parsed
