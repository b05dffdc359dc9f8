"""Wire contracts: what arrives on `trade-signals`, what leaves on `campaign-events`, what the API returns.

The JSON Schemas in `schemas/` are generated from these models (`campaign-manager schemas`); a test fails when
the two drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from campaign_manager.domain.campaign import (
    Campaign,
    CampaignPosition,
    CampaignStatus,
    EntrySignal,
    PatternType,
    PositionStatus,
    TradingRange,
    WyckoffPhase,
)

SCHEMA_VERSION = 1
RISK_TOLERANCE = Decimal("0.01")  # risk_amount may differ from (entry - stop) x size by 1%


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Price = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=8, allow_inf_nan=False)]
Shares = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=8, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2, allow_inf_nan=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")]
Timeframe = Annotated[str, Field(min_length=1, max_length=5, pattern=r"^[0-9]{0,3}[a-zA-Z]{1,2}$")]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


# Built once: json.loads(..., parse_float=...) constructs a new decoder on every call.
_EXACT_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def loads_exact(raw: bytes | str) -> Any:
    """JSON with every number kept exact: numbers become Decimal, never float; NaN/Infinity are refused.

    Bytes must be UTF-8 (json.loads would otherwise guess UTF-16/32 from the first bytes)."""
    return _EXACT_JSON.decode(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def risk_is_consistent(entry_price: Decimal, stop_loss: Decimal, size: Decimal, risk_amount: Decimal) -> bool:
    """risk_amount is (entry_price - stop_loss) x size, within RISK_TOLERANCE."""
    expected_risk = (entry_price - stop_loss) * size
    return abs(risk_amount - expected_risk) <= expected_risk * RISK_TOLERANCE


class TradingRangeMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UUID
    symbol: Symbol
    timeframe: Timeframe
    start_time: UtcDatetime
    creek: Price
    ice: Price
    jump: Price
    phase: WyckoffPhase

    def to_trading_range(self) -> TradingRange:
        return TradingRange(
            id=self.id,
            symbol=self.symbol,
            timeframe=self.timeframe,
            start_time=self.start_time,
            creek=self.creek,
            ice=self.ice,
            jump=self.jump,
            phase=self.phase,
        )


class TradeSignalMessage(BaseModel):
    """Value of a `trade-signals` record; the record's key is the trading range id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UUID
    symbol: Symbol
    timeframe: Timeframe
    pattern_type: PatternType
    phase: WyckoffPhase
    generated_at: UtcDatetime = Field(description="Must carry a timezone.")
    entry_price: Price
    stop_loss: Price = Field(description="Below entry_price.")
    target_price: Price = Field(description="Above entry_price.")
    position_size: Shares
    risk_amount: Money = Field(description="(entry_price - stop_loss) x position_size, within 1%.")
    portfolio_value: Money | None = Field(
        default=None, description="Omitted: the service's PORTFOLIO_VALUE; neither: the signal is rejected."
    )
    portfolio_id: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    confidence_score: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    correlation_id: str | None = Field(default=None, max_length=128)
    trading_range: TradingRangeMessage

    @model_validator(mode="after")
    def _check_consistency(self) -> TradeSignalMessage:
        if not self.stop_loss < self.entry_price:
            raise ValueError("stop_loss must be below entry_price")
        if not self.target_price > self.entry_price:
            raise ValueError("target_price must be above entry_price")
        if not risk_is_consistent(self.entry_price, self.stop_loss, self.position_size, self.risk_amount):
            expected_risk = (self.entry_price - self.stop_loss) * self.position_size
            raise ValueError(
                f"risk_amount {self.risk_amount} differs from (entry_price - stop_loss) x position_size "
                f"= {expected_risk.normalize():f} by more than 1%"
            )
        if self.trading_range.symbol != self.symbol:
            raise ValueError(f"trading_range.symbol {self.trading_range.symbol} differs from symbol {self.symbol}")
        if self.trading_range.timeframe != self.timeframe:
            raise ValueError(
                f"trading_range.timeframe {self.trading_range.timeframe} differs from timeframe {self.timeframe}"
            )
        return self

    def to_entry_signal(self, default_portfolio_value: Decimal | None) -> EntrySignal:
        return self.to_received().entry_signal(default_portfolio_value)

    def to_received(self) -> ReceivedSignal:
        entry = EntrySignal(
            id=self.id,
            portfolio_id=self.portfolio_id,
            symbol=self.symbol,
            timeframe=self.timeframe,
            pattern_type=self.pattern_type,
            phase=self.phase,
            generated_at=self.generated_at,
            entry_price=self.entry_price,
            stop_loss=self.stop_loss,
            target_price=self.target_price,
            shares=self.position_size,
            risk_amount=self.risk_amount,
            portfolio_value=self.portfolio_value,
            trading_range=self.trading_range.to_trading_range(),
        )
        return ReceivedSignal(entry, self.correlation_id)


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedSignal:
    """A valid trade signal as the signal handler takes it: the entry it asks for, and the correlation id its
    events carry. `entry.portfolio_value` is None where the signal left it to the service's PORTFOLIO_VALUE."""

    entry: EntrySignal
    correlation_id: str | None

    @property
    def id(self) -> UUID:
        return self.entry.id

    def entry_signal(self, default_portfolio_value: Decimal | None) -> EntrySignal:
        """The entry, sized with `default_portfolio_value` where the signal named no portfolio value."""
        if self.entry.portfolio_value is not None or default_portfolio_value is None:
            return self.entry
        return dataclasses.replace(self.entry, portfolio_value=default_portfolio_value)


class PositionEventType(enum.StrEnum):
    FILLED = "FILLED"
    PARTIALLY_CLOSED = "PARTIALLY_CLOSED"
    CLOSED = "CLOSED"
    STOPPED = "STOPPED"


class PositionEventMessage(BaseModel):
    """Value of a `position-events` record, keyed by campaign UUID: what the broker did with a position."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID = Field(description="Unique per event: a redelivered event changes nothing.")
    event_type: PositionEventType
    campaign_id: UUID
    position_id: UUID
    price: Price = Field(description="FILLED: the fill price; otherwise the exit price.")
    shares: Shares | None = Field(
        default=None, description="FILLED: shares filled; PARTIALLY_CLOSED: shares sold; CLOSED/STOPPED: ignored."
    )
    occurred_at: UtcDatetime = Field(description="Must carry a timezone.")
    correlation_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _check_shares(self) -> PositionEventMessage:
        needs_shares = (PositionEventType.FILLED, PositionEventType.PARTIALLY_CLOSED)
        if self.event_type in needs_shares and self.shares is None:
            raise ValueError(f"shares is required for {self.event_type}")
        return self


class MarketPriceMessage(BaseModel):
    """Value of a `market-prices` record, keyed by symbol: the last traded price."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    symbol: Symbol
    price: Price
    time: UtcDatetime = Field(description="When the price traded; must carry a timezone.")


class TradingRangeEventType(enum.StrEnum):
    RANGE_UPDATED = "RANGE_UPDATED"
    RANGE_INVALIDATED = "RANGE_INVALIDATED"


class TradingRangeEventMessage(BaseModel):
    """Value of a `trading-ranges` record, keyed by trading range id: new levels, or the range broke."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID = Field(description="Unique per event: a redelivered event changes nothing.")
    event_type: TradingRangeEventType
    trading_range: TradingRangeMessage
    reason: str | None = Field(
        default=None, min_length=1, max_length=500, description="RANGE_INVALIDATED: why (required)."
    )
    occurred_at: UtcDatetime = Field(description="Must carry a timezone.")
    correlation_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _check_reason(self) -> TradingRangeEventMessage:
        if self.event_type == TradingRangeEventType.RANGE_INVALIDATED and not (self.reason and self.reason.strip()):
            raise ValueError("reason is required for RANGE_INVALIDATED")
        if self.reason is not None and "\x00" in self.reason:
            # Stored as text, which PostgreSQL cannot hold a NUL in.
            raise ValueError("reason must not contain NUL characters")
        return self

    def to_trading_range(self) -> TradingRange:
        return self.trading_range.to_trading_range()


# --- what the service publishes and serves -------------------------------------------------------------------


class PositionView(BaseModel):
    position_id: UUID
    signal_id: UUID
    pattern_type: PatternType
    entry_date: datetime = Field(description="The signal's time until filled, then the fill's.")
    entry_price: Decimal = Field(description="The signal's planned entry until filled, then the fill price.")
    shares: Decimal = Field(description="Shares held now: the entry size less every exit; 0 once CLOSED.")
    stop_loss: Decimal
    target_price: Decimal
    current_price: Decimal = Field(description="The last market price seen (the entry until one arrives).")
    current_pnl: Decimal = Field(description="Unrealized P&L of the shares held: (current - entry) x shares.")
    status: PositionStatus
    allocation_percent: Decimal
    risk_amount: Decimal = Field(description="Risk taken at entry; exits leave it.")
    created_at: datetime
    updated_at: datetime
    entry_shares: Decimal = Field(description="Size at entry (planned, then filled); exits leave it.")
    realized_pnl: Decimal = Field(description="P&L of every exit so far.")
    exit_price: Decimal | None = Field(description="Price of the last exit.")
    filled_at: datetime | None = Field(description="When the broker's fill arrived; null while planned.")
    closed_at: datetime | None = Field(description="When the last share was sold.")


class TradingRangeView(BaseModel):
    id: UUID
    symbol: str
    timeframe: str
    start_time: datetime
    creek: Decimal
    ice: Decimal
    jump: Decimal
    phase: WyckoffPhase


class CampaignSnapshot(BaseModel):
    """A campaign as the API returns it and as every campaign event carries it."""

    id: UUID
    campaign_id: str = Field(description="Human id: {symbol}-{range start date}, with -2, -3, ... when taken.")
    portfolio_id: str
    symbol: str
    timeframe: str
    trading_range_id: UUID
    trading_range: TradingRangeView | None = None
    status: CampaignStatus
    phase: WyckoffPhase
    positions: list[PositionView]
    total_risk: Decimal
    total_allocation: Decimal
    current_risk: Decimal
    weighted_avg_entry: Decimal | None
    total_shares: Decimal = Field(description="Shares held now, over the open positions.")
    total_pnl: Decimal = Field(description="realized_pnl + unrealized_pnl.")
    start_date: datetime
    completed_at: datetime | None
    invalidation_reason: str | None
    version: int = Field(description="Bumped by one on every change; the expected_version of operator actions.")
    created_at: datetime
    updated_at: datetime
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    portfolio_value: Decimal | None = Field(description="The portfolio value the campaign was sized with.")


EventType = Literal[
    "CampaignCreated",
    "PositionAdded",
    "CampaignStatusChanged",
    "SignalRejected",
    "PositionFilled",
    "PositionClosed",
    "CampaignCompleted",
    "CampaignInvalidated",
    "CampaignMarkedToMarket",
    "PositionEventRejected",
]
# The `x-dlq-error-type` header of a dead letter.
DeadLetterErrorType = Literal["DecodeError", "ValidationError", "EmptyMessage", "ProcessingError"]


class CampaignEventMessage(BaseModel):
    """Value of a `campaign-events` record; the record's key is the campaign UUID (the trading range id for a
    rejection that has no campaign). Decimals are strings."""

    event_id: UUID
    event_type: EventType
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime
    campaign_version: int | None = Field(description="The campaign's version after this event; null without one.")
    causation_id: UUID | None = Field(
        description="The id of the message that caused the event: the signal, position event or range event; "
        "null for market prices and operator actions."
    )
    correlation_id: str | None
    campaign: CampaignSnapshot | None
    details: dict[str, Any] = Field(
        description="CampaignCreated/PositionAdded: position; CampaignStatusChanged: from_status, to_status, "
        "reason; SignalRejected: reason, signal_id, pattern_type, portfolio_id, trading_range_id; "
        "PositionFilled: position, fill_price, shares, planned_price, planned_shares, filled_at; "
        "PositionClosed: position, shares_closed, exit_price, realized_pnl, fully_closed, stop_hit; "
        "CampaignCompleted: reason, realized_pnl, total_pnl; CampaignInvalidated: reason, price, unrealized_pnl; "
        "CampaignMarkedToMarket: price, unrealized_pnl, total_pnl; "
        "PositionEventRejected: reason, event_id, event_type, position_id."
    )


# --- documents: the plain-dict form of the views above, serialised straight to JSON on the hot path ------------

_POSITION_FIELDS = tuple(PositionView.model_fields)
_CAMPAIGN_FIELDS = tuple(name for name in CampaignSnapshot.model_fields if name not in ("positions", "trading_range"))


def position_document(p: CampaignPosition) -> dict[str, Any]:
    """A position as `PositionView` describes it."""
    return {name: getattr(p, name) for name in _POSITION_FIELDS}


def campaign_document(
    c: Campaign, trading_range: TradingRange | None = None, *, with_positions: bool = True
) -> dict[str, Any]:
    """A campaign as `CampaignSnapshot` describes it: what the API returns and every event carries.

    Built as a dict, not a model: events are serialised thousands of times a second, and the values come from a
    campaign that the domain already keeps valid. Tests check the result against `CampaignSnapshot`.
    """
    document = {name: getattr(c, name) for name in _CAMPAIGN_FIELDS}
    if with_positions:
        document["positions"] = [position_document(p) for p in c.positions]
    document["trading_range"] = vars(trading_range) if trading_range else None
    return document


# Decimals as strings, datetimes as ISO 8601 with Z, UUIDs and enums as strings: what the models above describe.
to_json = msgspec.json.Encoder().encode


class DocumentCache:
    """The JSON of campaign versions and positions, each encoded once per unit of work.

    Every event carries the whole campaign, and the store writes rows from the same bytes, so one campaign version
    and its positions would otherwise be encoded again for each event, each later signal of the batch and the
    write. Use one cache per unit of work: a campaign version and a position's `updated_at` identify their content
    only within it (a retried unit of work may produce the same version with other content)."""

    def __init__(self) -> None:
        self._positions: dict[tuple[UUID, datetime], bytes] = {}
        self._campaigns: dict[tuple[UUID, int], bytes] = {}
        self._snapshots: dict[tuple[UUID, int], bytes] = {}

    def position(self, position: CampaignPosition) -> bytes:
        """`PositionView` JSON."""
        key = (position.position_id, position.updated_at)
        if (encoded := self._positions.get(key)) is None:
            encoded = self._positions[key] = to_json(position_document(position))
        return encoded

    def forget_positions(self, positions: Iterable[CampaignPosition]) -> None:
        """Drop the JSON kept for these positions. A position changed twice in one unit of work carries the same
        `updated_at` both times, so its second state must be encoded anew."""
        for position in positions:
            self._positions.pop((position.position_id, position.updated_at), None)

    def campaign(self, campaign: Campaign) -> bytes:
        """The campaign's own fields (the `campaigns` row), without positions or trading range."""
        key = (campaign.id, campaign.version)
        if (encoded := self._campaigns.get(key)) is None:
            encoded = self._campaigns[key] = to_json({name: getattr(campaign, name) for name in _CAMPAIGN_FIELDS})
        return encoded

    def snapshot(self, campaign: Campaign) -> bytes:
        """`CampaignSnapshot` JSON, as events carry it."""
        key = (campaign.id, campaign.version)
        if (encoded := self._snapshots.get(key)) is None:
            positions = b",".join([self.position(p) for p in campaign.positions])
            encoded = self._snapshots[key] = (
                self.campaign(campaign)[:-1] + b',"trading_range":null,"positions":[' + positions + b"]}"
            )
        return encoded
