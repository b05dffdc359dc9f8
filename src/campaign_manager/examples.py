"""Well-formed trade signals, built the way an upstream generator would: for the demo, the benchmark and tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

# The story's AAPL range: Creek 148, Ice 150, Jump 156. Risk figures are for a 100,000 portfolio:
# Spring 2.0% + SOS 1.5% + LPS 1.5% = exactly the 5% campaign budget.
AAPL_ENTRIES = [
    # pattern, phase, entry, stop, shares
    ("SPRING", "C", "148.50", "146.50", "1000"),
    ("SOS", "D", "150.25", "148.75", "1000"),
    ("LPS", "D", "151.00", "149.50", "1000"),
]


def trading_range(
    *,
    range_id: UUID | None = None,
    symbol: str = "AAPL",
    timeframe: str = "1d",
    start_time: datetime = datetime(2024, 10, 15, 13, 30, tzinfo=UTC),
    creek: str = "148.00",
    ice: str = "150.00",
    jump: str = "156.00",
    phase: str = "C",
) -> dict[str, Any]:
    return {
        "id": str(range_id or uuid4()),
        "symbol": symbol,
        "timeframe": timeframe,
        "start_time": start_time.isoformat(),
        "creek": creek,
        "ice": ice,
        "jump": jump,
        "phase": phase,
    }


def trade_signal(
    range_: dict[str, Any],
    *,
    pattern_type: str = "SPRING",
    phase: str = "C",
    entry_price: str = "148.50",
    stop_loss: str = "146.50",
    target_price: str | None = None,
    position_size: str = "1000",
    portfolio_value: str | None = "100000.00",
    portfolio_id: str | None = None,
    signal_id: UUID | None = None,
    generated_at: datetime | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """A signal whose risk_amount is exactly (entry - stop) x size."""
    risk = (Decimal(entry_price) - Decimal(stop_loss)) * Decimal(position_size)
    signal: dict[str, Any] = {
        "id": str(signal_id or uuid4()),
        "symbol": range_["symbol"],
        "timeframe": range_["timeframe"],
        "pattern_type": pattern_type,
        "phase": phase,
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(),
        "entry_price": entry_price,
        "stop_loss": stop_loss,
        "target_price": target_price or range_["jump"],
        "position_size": position_size,
        "risk_amount": str(risk.quantize(Decimal("0.01"))),
        "trading_range": range_,
    }
    if portfolio_value is not None:
        signal["portfolio_value"] = portfolio_value
    if portfolio_id is not None:
        signal["portfolio_id"] = portfolio_id
    if correlation_id is not None:
        signal["correlation_id"] = correlation_id
    return signal


def aapl_campaign_signals(range_id: UUID | None = None, portfolio_id: str | None = None) -> list[dict[str, Any]]:
    """The story's Spring 148.50 -> SOS 150.25 -> LPS 151.00 sequence in one AAPL range."""
    range_ = trading_range(range_id=range_id)
    return [
        trade_signal(
            range_,
            pattern_type=pattern,
            phase=phase,
            entry_price=entry,
            stop_loss=stop,
            position_size=shares,
            portfolio_id=portfolio_id,
            correlation_id=f"demo-{pattern.lower()}",
        )
        for pattern, phase, entry, stop, shares in AAPL_ENTRIES
    ]


def encode(signal: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of the `trade-signals` record: keyed by trading range id so a range stays on one partition."""
    return signal["trading_range"]["id"].encode(), json.dumps(signal).encode()


def range_event(
    range_: dict[str, Any],
    event_type: str = "RANGE_UPDATED",
    *,
    reason: str | None = None,
    event_id: UUID | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """A `trading-ranges` value: the range's levels now (RANGE_UPDATED), or that it broke (RANGE_INVALIDATED,
    with a reason). Key it by the range id, as its signals are."""
    event: dict[str, Any] = {
        "event_id": str(event_id or uuid4()),
        "event_type": event_type,
        "trading_range": range_,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
    }
    if reason is not None:
        event["reason"] = reason
    if correlation_id is not None:
        event["correlation_id"] = correlation_id
    return event


def position_event(
    campaign_id: UUID | str,
    position_id: UUID | str,
    event_type: str = "FILLED",
    *,
    price: str,
    shares: str | None = None,
    event_id: UUID | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """A `position-events` value: the broker filled (FILLED, with shares), sold some (PARTIALLY_CLOSED, with
    shares), sold all (CLOSED) or was stopped out of (STOPPED) a position. Key it by the campaign id."""
    event: dict[str, Any] = {
        "event_id": str(event_id or uuid4()),
        "event_type": event_type,
        "campaign_id": str(campaign_id),
        "position_id": str(position_id),
        "price": price,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
    }
    if shares is not None:
        event["shares"] = shares
    if correlation_id is not None:
        event["correlation_id"] = correlation_id
    return event
