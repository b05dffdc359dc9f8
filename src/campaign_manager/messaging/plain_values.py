"""The values the fast parsers (msgspec) take as they are: only forms the contracts (pydantic) plainly accept.

A value in any other form, valid or not, sends its whole record to the contract's own check, so that what is
accepted, its exact value and every dead-letter reason stay the contract's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

import msgspec

Decoded = TypeVar("Decoded")

# The contracts' Symbol: its pattern, 1 to 20 characters. `fullmatch`: `$` would also match before a newline.
SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,19}")
# RFC 3339 with `T`, an offset or Z, at most microseconds: read alike by `datetime.fromisoformat` and pydantic.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def decoded(decode: Callable[[bytes], Decoded], value: bytes) -> Decoded | None:
    """`decode(value)` (a msgspec decoder), or None where it cannot read `value` or `value` is not ASCII: msgspec lets
    invalid UTF-8 through in fields it skips, which the contracts refuse."""
    if not value.isascii():
        return None
    try:
        return decode(value)
    except msgspec.DecodeError:
        return None


def decimal_form(integer_digits: int, decimal_places: int) -> re.Pattern[bytes]:
    """A JSON string or number of at most these digits: no sign, no exponent, no leading zero but `0.x`."""
    number = rf"(?:0|[1-9][0-9]{{0,{integer_digits - 1}}})(?:\.[0-9]{{1,{decimal_places}}})?"
    return re.compile(rf'"({number})"|({number})'.encode())


# Price and Shares allow 18 digits, 8 of them decimals; Money 12 digits, 2 of them decimals.
PRICE = decimal_form(10, 8)
MONEY = decimal_form(10, 2)


def plain_decimal(raw: bytes, form: re.Pattern[bytes]) -> Decimal | None:
    """The number that `raw` (JSON text) plainly is in `form`, exactly as written; None otherwise."""
    if (plain := form.fullmatch(raw)) is None:
        return None
    return Decimal((plain[1] or plain[2]).decode())


def positive_decimal(raw: bytes, form: re.Pattern[bytes]) -> Decimal | None:
    """`plain_decimal`, when above 0."""
    value = plain_decimal(raw, form)
    return value if value else None


def aware_time(text: str) -> datetime | None:
    """The UTC time that `text` plainly is; None for any other form (or an impossible date)."""
    if not _TIME.fullmatch(text):
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:  # out of range: month 13, hour 24, ...
        return None
    return time.astimezone(UTC) if time.utcoffset() else time
