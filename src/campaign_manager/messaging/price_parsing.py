"""`market-prices` records into `PriceTick`s: the parsing of the busiest topic.

`MarketPriceMessage` is the contract and `parse_record` its full check (JSON with exact decimals, then pydantic):
about 10 µs a record, more than everything else a tick costs. So a record is first decoded by msgspec (about
1 µs) and taken as it is only when it is plainly valid: ASCII JSON, a symbol of the contract's pattern, a price
above 0 with at most 10 integer and 8 decimal digits and no exponent, a time as RFC 3339 with `T`, an offset
and at most microseconds. Anything else, invalid or valid in a less usual form (a numeric timestamp, `1E+2`,
nanoseconds), goes through `parse_record`, so what is accepted, its value and every dead-letter reason stay the
contract's own. tests/unit/test_price_parsing.py holds the two paths together.
"""

from __future__ import annotations

import msgspec

from campaign_manager.contracts import MarketPriceMessage
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.plain_values import PRICE, SYMBOL, aware_time, decoded, positive_decimal
from campaign_manager.service.batches import ParsedRecord, ValidRecord
from campaign_manager.service.prices import PriceTick
from campaign_manager.service.records import ConsumedRecord


class _Tick(msgspec.Struct, gc=False):
    symbol: str
    price: msgspec.Raw  # the JSON text, string or number: checked, then read exactly, below
    time: str  # checked and converted below: msgspec's own datetime rounds nanoseconds, pydantic truncates them


_decode = msgspec.json.Decoder(_Tick).decode


def _plain_tick(value: bytes) -> PriceTick | None:
    """The tick, when `value` is plainly a valid one; None when only the contract's full check can tell."""
    if (tick := decoded(_decode, value)) is None:
        return None
    # Negative, NaN, an exponent, too many digits, not a number, another form of time: the contract decides.
    price = positive_decimal(tick.price, PRICE)
    time = aware_time(tick.time)
    if price is None or time is None or not SYMBOL.fullmatch(tick.symbol):
        return None
    return PriceTick(tick.symbol, price, time)


def parse_price_record(record: ConsumedRecord) -> ParsedRecord:
    """A `PriceTick`, or a dead letter whose reason is the contract's (`parse_record`)."""
    if record.value and (tick := _plain_tick(record.value)) is not None:
        return ValidRecord(record, tick)
    parsed = parse_record(record, MarketPriceMessage)
    if isinstance(parsed, ValidRecord):
        message: MarketPriceMessage = parsed.message
        return ValidRecord(record, PriceTick(message.symbol, message.price, message.time))
    return parsed
