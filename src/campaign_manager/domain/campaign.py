"""A Wyckoff campaign: the positions built in one trading range, their risk, allocation and lifecycle.

All the rules of a campaign live in this file. It does no I/O; callers pass in the time and the ids already taken.

Lifecycle: ACTIVE -> MARKUP (an SOS joins) -> COMPLETED (all positions closed) | INVALIDATED (stop hit, range broken).
COMPLETED and INVALIDATED are terminal: a later signal in that range opens a new campaign.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from uuid import UUID

from campaign_manager.domain.errors import InvalidStatusTransition, RuleViolation
from campaign_manager.domain.events import (
    AllocationNearLimit,
    CampaignCreated,
    CampaignEvent,
    CampaignStatusChanged,
    PositionAdded,
)
from campaign_manager.domain.ids import new_id

MAX_TRADE_RISK_PERCENT = Decimal("2")
MAX_CAMPAIGN_ALLOCATION_PERCENT = Decimal("5")
ALLOCATION_WARNING_PERCENT = Decimal("4.5")

# Storage precision: money NUMERIC(12,2), prices and shares NUMERIC(18,8), allocation NUMERIC(7,4).
CENTS = Decimal("0.01")
PRICE_STEP = Decimal("0.00000001")
ALLOCATION_STEP = Decimal("0.0001")
ZERO = Decimal("0")


class CampaignStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    MARKUP = "MARKUP"
    COMPLETED = "COMPLETED"
    INVALIDATED = "INVALIDATED"


OPEN_STATUSES = frozenset({CampaignStatus.ACTIVE, CampaignStatus.MARKUP})

ALLOWED_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    CampaignStatus.ACTIVE: frozenset({CampaignStatus.MARKUP, CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED}),
    CampaignStatus.MARKUP: frozenset({CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED}),
    CampaignStatus.COMPLETED: frozenset(),
    CampaignStatus.INVALIDATED: frozenset(),
}


class PatternType(enum.StrEnum):
    SPRING = "SPRING"
    SOS = "SOS"
    LPS = "LPS"


class WyckoffPhase(enum.StrEnum):
    """Ordered as the letters are, so `max` gives the later phase."""

    C = "C"
    D = "D"
    E = "E"


class PositionStatus(enum.StrEnum):
    OPEN = "OPEN"
    PARTIAL = "PARTIAL"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class TradingRange:
    id: UUID
    symbol: str
    timeframe: str
    start_time: datetime
    creek: Decimal
    ice: Decimal
    jump: Decimal
    phase: WyckoffPhase


@dataclass(frozen=True)
class EntrySignal:
    """A request to open a position, already checked for shape (prices ordered, risk consistent)."""

    id: UUID
    portfolio_id: str
    symbol: str
    timeframe: str
    pattern_type: PatternType
    phase: WyckoffPhase
    generated_at: datetime
    entry_price: Decimal
    stop_loss: Decimal
    target_price: Decimal
    shares: Decimal
    risk_amount: Decimal
    portfolio_value: Decimal | None
    trading_range: TradingRange


@dataclass
class CampaignPosition:
    position_id: UUID
    signal_id: UUID
    pattern_type: PatternType
    entry_date: datetime
    entry_price: Decimal
    shares: Decimal
    stop_loss: Decimal
    target_price: Decimal
    current_price: Decimal
    current_pnl: Decimal
    status: PositionStatus
    allocation_percent: Decimal
    risk_amount: Decimal
    created_at: datetime
    updated_at: datetime

    @property
    def is_open(self) -> bool:
        return self.status != PositionStatus.CLOSED


def allocation_percent(risk_amount: Decimal, portfolio_value: Decimal) -> Decimal:
    """Share of the portfolio put at risk, in percent, to 4 decimal places."""
    return (risk_amount / portfolio_value * 100).quantize(ALLOCATION_STEP, rounding=ROUND_HALF_EVEN)


def human_campaign_id(symbol: str, range_start: datetime, taken: Collection[str]) -> str:
    """`{symbol}-{YYYY-MM-DD}` of the range's start; `-2`, `-3`, ... when another campaign already has it."""
    base = f"{symbol}-{range_start.strftime('%Y-%m-%d')}"
    if base not in taken:
        return base
    suffix = 2
    while f"{base}-{suffix}" in taken:
        suffix += 1
    return f"{base}-{suffix}"


def check_trade_risk(signal: EntrySignal) -> Decimal:
    """The signal's portfolio value, once its risk is known to fit the per-trade limit."""
    if signal.portfolio_value is None:
        raise RuleViolation("Portfolio value unknown: the signal carries none and no default is configured")
    if signal.risk_amount * 100 > signal.portfolio_value * MAX_TRADE_RISK_PERCENT:
        raise RuleViolation("Trade risk exceeds 2% of portfolio")
    return signal.portfolio_value


def _new_position(signal: EntrySignal, portfolio_value: Decimal, now: datetime) -> CampaignPosition:
    return CampaignPosition(
        position_id=new_id(),
        signal_id=signal.id,
        pattern_type=signal.pattern_type,
        entry_date=signal.generated_at,
        entry_price=signal.entry_price,
        shares=signal.shares,
        stop_loss=signal.stop_loss,
        target_price=signal.target_price,
        current_price=signal.entry_price,
        current_pnl=ZERO.quantize(CENTS),
        status=PositionStatus.OPEN,
        allocation_percent=allocation_percent(signal.risk_amount, portfolio_value),
        risk_amount=signal.risk_amount,
        created_at=now,
        updated_at=now,
    )


@dataclass
class Campaign:
    id: UUID
    campaign_id: str
    portfolio_id: str
    symbol: str
    timeframe: str
    trading_range_id: UUID
    status: CampaignStatus
    phase: WyckoffPhase
    start_date: datetime
    created_at: datetime
    updated_at: datetime
    positions: list[CampaignPosition] = field(default_factory=list)
    total_risk: Decimal = ZERO
    total_allocation: Decimal = ZERO
    current_risk: Decimal = ZERO
    weighted_avg_entry: Decimal | None = None
    total_shares: Decimal = ZERO
    total_pnl: Decimal = ZERO
    completed_at: datetime | None = None
    invalidation_reason: str | None = None
    version: int = 1
    # Events recorded since the caller last collected them; not part of the campaign's state.
    events: list[CampaignEvent] = field(default_factory=list, compare=False, repr=False)

    # --- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, signal: EntrySignal, campaign_id: str, now: datetime) -> Campaign:
        """The first signal of a trading range opens a campaign holding that signal's position."""
        portfolio_value = check_trade_risk(signal)
        position = _new_position(signal, portfolio_value, now)
        cls._check_campaign_allocation(ZERO, position.allocation_percent)
        trading_range = signal.trading_range
        campaign = cls(
            id=new_id(),
            campaign_id=campaign_id,
            portfolio_id=signal.portfolio_id,
            symbol=signal.symbol,
            timeframe=trading_range.timeframe,
            trading_range_id=trading_range.id,
            # An SOS confirms the markup already: a campaign it opens starts there.
            status=CampaignStatus.MARKUP if signal.pattern_type == PatternType.SOS else CampaignStatus.ACTIVE,
            phase=max(signal.phase, trading_range.phase),
            start_date=signal.generated_at,
            created_at=now,
            updated_at=now,
            positions=[position],
        )
        campaign._recompute_totals()
        campaign.events.append(CampaignCreated(campaign.id, position))
        campaign._warn_if_allocation_passed(ZERO)
        return campaign

    # --- adding positions ------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def can_add_position(self, new_allocation: Decimal) -> bool:
        return self.is_open and self.total_allocation + new_allocation <= MAX_CAMPAIGN_ALLOCATION_PERCENT

    def add_position(self, signal: EntrySignal, now: datetime) -> CampaignPosition:
        """A later signal of the same range joins the campaign as one more position."""
        if not self.is_open:
            # The caller opens a new campaign instead; reaching this is a programming error.
            raise RuleViolation(f"Campaign {self.campaign_id} is {self.status} and takes no new positions")
        portfolio_value = check_trade_risk(signal)
        position = _new_position(signal, portfolio_value, now)
        self._check_campaign_allocation(self.total_allocation, position.allocation_percent)

        allocation_before = self.total_allocation
        self.positions.append(position)
        self._recompute_totals()
        self.phase = max(self.phase, signal.phase)
        self._touch(now)
        self.events.append(PositionAdded(self.id, position))
        if signal.pattern_type == PatternType.SOS and self.status == CampaignStatus.ACTIVE:
            self._transition(CampaignStatus.MARKUP, now, reason="SOS entry")
        self._warn_if_allocation_passed(allocation_before)
        return position

    @staticmethod
    def _check_campaign_allocation(current: Decimal, added: Decimal) -> None:
        if current + added > MAX_CAMPAIGN_ALLOCATION_PERCENT:
            raise RuleViolation("Campaign allocation exceeded (5% max)")

    # --- lifecycle -------------------------------------------------------------------------------------------

    def change_status(self, to_status: CampaignStatus, now: datetime, reason: str | None = None) -> None:
        """An explicit lifecycle move (operator, exits, invalidation); one version step."""
        self._transition(to_status, now, reason)
        self._touch(now)

    def _transition(self, to_status: CampaignStatus, now: datetime, reason: str | None) -> None:
        if to_status not in ALLOWED_TRANSITIONS[self.status]:
            raise InvalidStatusTransition(self.status, to_status)
        from_status, self.status = self.status, to_status
        if to_status in (CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED):
            self.completed_at = now
        if to_status == CampaignStatus.INVALIDATED:
            self.invalidation_reason = reason
        self.events.append(CampaignStatusChanged(self.id, from_status, to_status, reason))

    # --- derived figures -------------------------------------------------------------------------------------

    def open_positions(self) -> list[CampaignPosition]:
        return [p for p in self.positions if p.is_open]

    def calculate_total_pnl(self) -> Decimal:
        return sum((p.current_pnl for p in self.positions), ZERO)

    def _recompute_totals(self) -> None:
        held = self.open_positions()
        self.total_risk = sum((p.risk_amount for p in self.positions), ZERO)
        self.total_allocation = sum((p.allocation_percent for p in self.positions), ZERO)
        self.current_risk = sum((p.risk_amount for p in held), ZERO)
        self.total_shares = sum((p.shares for p in held), ZERO)
        cost = sum((p.entry_price * p.shares for p in held), ZERO)
        self.weighted_avg_entry = (
            (cost / self.total_shares).quantize(PRICE_STEP, rounding=ROUND_HALF_EVEN) if self.total_shares else None
        )
        self.total_pnl = self.calculate_total_pnl().quantize(CENTS, rounding=ROUND_HALF_EVEN)

    def _touch(self, now: datetime) -> None:
        """Every change of a stored campaign is one version step (optimistic locking)."""
        self.version += 1
        self.updated_at = now

    def _warn_if_allocation_passed(self, allocation_before: Decimal) -> None:
        if allocation_before <= ALLOCATION_WARNING_PERCENT < self.total_allocation:
            self.events.append(AllocationNearLimit(self.id, self.total_allocation))

    def collect_events(self) -> list[CampaignEvent]:
        events, self.events = self.events, []
        return events
