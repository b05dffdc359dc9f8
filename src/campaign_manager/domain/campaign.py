"""A Wyckoff campaign: the positions built in one trading range, their risk, allocation, P&L and lifecycle.

All the rules of a campaign live in this file. It does no I/O; callers pass in the time and the ids already taken.

Lifecycle: ACTIVE -> MARKUP (an SOS joins) -> COMPLETED (all positions closed) | INVALIDATED (stop hit, range broken).
COMPLETED and INVALIDATED are terminal: a later signal in that range opens a new campaign, and the ended campaign
refuses every further fill, exit and price (`CampaignEnded`).

Every change of a stored campaign is one version step (`_touch`) and records its events in `campaign.events`:

- a signal joins (`add_position`): PositionAdded [, CampaignStatusChanged to MARKUP] [, AllocationNearLimit]
- a fill (`fill_position`): PositionFilled [, AllocationNearLimit]
- an exit (`partially_close_position`, `close_position`, `stop_position`): PositionClosed, then, if the campaign
  ended with it, CampaignInvalidated or CampaignCompleted, and CampaignStatusChanged
- a market price (`mark_to_market`): CampaignMarkedToMarket [, CampaignInvalidated, CampaignStatusChanged]
- the range or an operator (`invalidate`, `complete`, `operator_change_status`, `change_status`)
- a repair (`rebuild_totals`): CampaignTotalsRebuilt, only when the stored totals had drifted

A request that breaks a rule raises a `RuleViolation` (or a subclass naming what was wrong) before anything moves.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID

from campaign_manager.domain.errors import (
    AmountOutOfRange,
    CampaignEnded,
    ExitExceedsHolding,
    FillAtOrBelowStop,
    InvalidStatusTransition,
    NotPositive,
    PositionAlreadyClosed,
    PositionAlreadyExited,
    PositionNotFound,
    ReasonRequired,
    RuleViolation,
    VersionMismatch,
)
from campaign_manager.domain.events import (
    AllocationNearLimit,
    CampaignCompleted,
    CampaignCreated,
    CampaignEvent,
    CampaignInvalidated,
    CampaignMarkedToMarket,
    CampaignStatusChanged,
    CampaignTotalsRebuilt,
    PositionAdded,
    PositionClosed,
    PositionFilled,
)
from campaign_manager.domain.ids import new_id

MAX_TRADE_RISK_PERCENT = Decimal("2")
MAX_CAMPAIGN_ALLOCATION_PERCENT = Decimal("5")
ALLOCATION_WARNING_PERCENT = Decimal("4.5")
MAX_PORTFOLIO_HEAT_PERCENT = Decimal("10")

# Storage precision: money NUMERIC(12,2), prices and shares NUMERIC(18,8), allocation NUMERIC(7,4).
CENTS = Decimal("0.01")
PRICE_STEP = Decimal("0.00000001")
ALLOCATION_STEP = Decimal("0.0001")
ZERO = Decimal("0")
ZERO_CENTS = Decimal("0.00")
MAX_MONEY = Decimal("9999999999.99")  # money is NUMERIC(12,2): an amount beyond it could not be stored

SPRING_LOW_BREAK = "Spring low break"
STOP_LEVEL_BREAK = "Stop level break"
ALL_POSITIONS_CLOSED = "All positions closed"


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


# OPEN -> PARTIAL (some shares sold) -> CLOSED (none left), or OPEN -> CLOSED in one exit. (A comment, not a
# docstring: docstrings of enums end up in the published JSON Schemas.)
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
    """One entry of the campaign (a Spring, SOS or LPS) and what became of it.

    - `entry_price`, `entry_date`: the signal's plan until a fill replaces them with the broker's; `filled_at` is
      None until then.
    - `shares`: the shares held now. The planned size, then the filled size; each exit takes its shares off; 0 once
      CLOSED. (The story's formulas then hold as written: current_pnl = (current_price - entry_price) x shares.)
    - `entry_shares`: the size at entry (planned, then filled); exits leave it. None only when read from a row
      stored before the column existed, and then taken to be `shares`.
    - `risk_amount`, `allocation_percent`: the risk taken at entry, (entry_price - stop_loss) x entry_shares once
      filled; exits leave them, so the campaign's total_risk and total_allocation keep what was taken.
    - `current_price`: the last price seen: the entry (planned, then filled), then every market price. Exits leave it.
    - `current_pnl`: unrealized P&L of the shares still held, (current_price - entry_price) x shares, to the cent;
      0.00 once CLOSED.
    - `realized_pnl`: the P&L of every exit so far, each (exit_price - entry_price) x shares sold, to the cent.
    - `exit_price`: the price of the last exit; `closed_at`: when the last share was sold.
    """

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
    entry_shares: Decimal | None = None
    realized_pnl: Decimal = ZERO_CENTS
    exit_price: Decimal | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.entry_shares is None:
            self.entry_shares = self.shares

    @property
    def is_open(self) -> bool:
        return self.status != PositionStatus.CLOSED

    @property
    def open_risk(self) -> Decimal:
        """The entry risk still carried by the shares held: risk_amount x shares / entry_shares, to the cent.

        That is (entry_price - stop_loss) x shares whenever risk_amount is (entry_price - stop_loss) x entry_shares
        (always, once filled); before a fill it keeps the signal's own risk_amount, which may differ by up to 1%."""
        if not self.is_open:
            return ZERO_CENTS
        if self.shares == self.entry_shares or not self.entry_shares:
            return self.risk_amount
        return (self.risk_amount * self.shares / self.entry_shares).quantize(CENTS, rounding=ROUND_HALF_EVEN)

    def unrealized_pnl_at(self, price: Decimal) -> Decimal:
        if not self.is_open:
            return ZERO_CENTS
        return to_cents((price - self.entry_price) * self.shares, "Unrealized P&L")


def to_cents(amount: Decimal, name: str) -> Decimal:
    """An amount of money to the cent; refused (a rule violation, not a failed write) when too large to store."""
    if abs(amount) > MAX_MONEY:
        # Shown to the cent, unless too long for the decimal context to round.
        shown = amount.quantize(CENTS, rounding=ROUND_HALF_EVEN) if amount.adjusted() < 20 else amount
        raise AmountOutOfRange(name, shown, MAX_MONEY)
    return amount.quantize(CENTS, rounding=ROUND_HALF_EVEN)


def _check_recordable_pnl(realized: Decimal, unrealized: Decimal) -> None:
    """A campaign's P&L totals as a change would leave them: refused before anything moves when one could not be
    stored (each position's P&L may fit while their sum does not)."""
    to_cents(realized, "Realized P&L of the campaign")
    to_cents(unrealized, "Unrealized P&L of the campaign")
    to_cents(realized + unrealized, "Total P&L of the campaign")


def allocation_percent(risk_amount: Decimal, portfolio_value: Decimal) -> Decimal:
    """Share of the portfolio put at risk, in percent, to 4 decimal places."""
    return (risk_amount / portfolio_value * 100).quantize(ALLOCATION_STEP, rounding=ROUND_HALF_EVEN)


def human_campaign_id(symbol: str, range_start: datetime, taken: Collection[str]) -> str:
    """`{symbol}-{YYYY-MM-DD}` of the range's start; `-2`, `-3`, ... when another campaign already has it."""
    base = f"{symbol}-{range_start.date().isoformat()}"  # isoformat: strftime costs ~10x as much
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


def check_portfolio_heat(open_risk: Decimal, added_risk: Decimal, portfolio_value: Decimal) -> None:
    """Refuse a trade that would put more than 10% of the portfolio at risk at once; exactly 10% is allowed.

    `open_risk` is the risk still open across the portfolio's campaigns (the sum of their `current_risk`); the
    service gathers it, this only judges it."""
    if (open_risk + added_risk) * 100 > portfolio_value * MAX_PORTFOLIO_HEAT_PERCENT:
        raise RuleViolation("Portfolio heat limit exceeded (10% max)")


def _check_positive(name: str, value: Decimal) -> None:
    if not value > 0:
        raise NotPositive(name, value)


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
        current_pnl=ZERO_CENTS,
        status=PositionStatus.OPEN,
        allocation_percent=allocation_percent(signal.risk_amount, portfolio_value),
        risk_amount=signal.risk_amount,
        created_at=now,
        updated_at=now,
        entry_shares=signal.shares,
    )


# --- totals ----------------------------------------------------------------------------------------------------

TOTAL_FIELDS = (
    "total_risk",
    "total_allocation",
    "current_risk",
    "total_shares",
    "weighted_avg_entry",
    "realized_pnl",
    "unrealized_pnl",
    "total_pnl",
)


def _derive_totals(positions: Iterable[CampaignPosition]) -> dict[str, Any]:
    """The campaign's totals from its positions: the one place they are derived (see TOTAL_FIELDS).

    total_risk and total_allocation keep what every position took at entry; the others describe what is held now
    (closed positions hold nothing) and what was made: total_pnl = realized_pnl + unrealized_pnl."""
    total_risk = total_allocation = current_risk = total_shares = cost = realized = unrealized = ZERO
    for p in positions:
        total_risk += p.risk_amount
        total_allocation += p.allocation_percent
        realized += p.realized_pnl
        if p.is_open:
            current_risk += p.open_risk
            total_shares += p.shares
            cost += p.entry_price * p.shares
            unrealized += p.current_pnl
    return {
        "total_risk": total_risk,
        "total_allocation": total_allocation,
        "current_risk": current_risk,
        "total_shares": total_shares,
        "weighted_avg_entry": (
            (cost / total_shares).quantize(PRICE_STEP, rounding=ROUND_HALF_EVEN) if total_shares else None
        ),
        "realized_pnl": realized.quantize(CENTS, rounding=ROUND_HALF_EVEN),
        "unrealized_pnl": unrealized.quantize(CENTS, rounding=ROUND_HALF_EVEN),
        "total_pnl": (realized + unrealized).quantize(CENTS, rounding=ROUND_HALF_EVEN),
    }


def recompute_totals(campaign: Campaign) -> dict[str, tuple[Any, Any]]:
    """What a rebuild would change: every total whose stored value differs from what the positions add up to,
    as field -> (stored, recomputed). Empty when the campaign is consistent. Changes nothing."""
    stored = {name: getattr(campaign, name) for name in TOTAL_FIELDS}
    derived = _derive_totals(campaign.positions)
    return {name: (stored[name], value) for name, value in derived.items() if stored[name] != value}


@dataclass
class Campaign:
    """The positions of one trading range and their totals (see `_derive_totals` for what each total means).

    `portfolio_value` is the one the opening signal was sized with; fills recompute allocation with it. None only
    for campaigns stored before it was kept.
    """

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
    realized_pnl: Decimal = ZERO_CENTS
    unrealized_pnl: Decimal = ZERO_CENTS
    portfolio_value: Decimal | None = None
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
            portfolio_value=portfolio_value,
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
            raise CampaignEnded(self.campaign_id, self.status, "takes no new positions")
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

    # --- fills and exits -------------------------------------------------------------------------------------

    def fill_position(
        self,
        position_id: UUID,
        fill_price: Decimal,
        shares: Decimal,
        now: datetime,
        *,
        filled_at: datetime | None = None,
    ) -> CampaignPosition:
        """The broker filled a position: its price and size replace the signal's plan.

        The entry date becomes `filled_at` (default `now`), the current price the fill price, and the risk
        (fill_price - stop_loss) x shares, with its allocation recomputed on the campaign's portfolio value. A
        later fill report replaces the earlier one (brokers report the cumulative size and average price), but
        only until the first exit. The fill must keep the campaign within its 5% budget (the store enforces it
        too); the 2% per-trade limit judged the signal and is not judged again.
        """
        position = self._changeable_position(position_id, "takes no fills")
        _check_positive("Fill price", fill_price)
        _check_positive("Filled shares", shares)
        if position.status != PositionStatus.OPEN or position.exit_price is not None:
            raise PositionAlreadyExited(position_id)
        if fill_price <= position.stop_loss:
            raise FillAtOrBelowStop(position_id, fill_price, position.stop_loss)
        if self.portfolio_value is None:
            raise RuleViolation(f"Portfolio value unknown: campaign {self.campaign_id} was stored without one")
        risk_amount = to_cents((fill_price - position.stop_loss) * shares, "Risk amount")
        new_allocation = allocation_percent(risk_amount, self.portfolio_value)
        self._check_campaign_allocation(self.total_allocation - position.allocation_percent, new_allocation)

        # Filled at the current price, the position's unrealized P&L becomes 0.
        _check_recordable_pnl(self.realized_pnl, self.unrealized_pnl - position.current_pnl)

        planned_price, planned_shares = position.entry_price, position.shares
        allocation_before = self.total_allocation
        position.entry_price = fill_price
        position.shares = position.entry_shares = shares
        fill_time = filled_at or now
        position.entry_date = position.filled_at = fill_time
        position.risk_amount = risk_amount
        position.allocation_percent = new_allocation
        position.current_price = fill_price
        position.current_pnl = position.unrealized_pnl_at(fill_price)
        position.updated_at = now
        self._recompute_totals()
        self._touch(now)
        self.events.append(
            PositionFilled(self.id, position, fill_price, shares, planned_price, planned_shares, fill_time)
        )
        self._warn_if_allocation_passed(allocation_before)
        return position

    def partially_close_position(
        self, position_id: UUID, shares: Decimal, exit_price: Decimal, now: datetime
    ) -> CampaignPosition:
        """Sell some of a position's shares (all of them closes it, as `close_position` would)."""
        return self._exit(position_id, shares, exit_price, now, stop_hit=False)

    def close_position(self, position_id: UUID, exit_price: Decimal, now: datetime) -> CampaignPosition:
        """Sell every share the position still holds."""
        return self._exit(position_id, None, exit_price, now, stop_hit=False)

    def stop_position(self, position_id: UUID, exit_price: Decimal, now: datetime) -> CampaignPosition:
        """The position's stop was hit: every share is sold. A stopped Spring invalidates the campaign."""
        return self._exit(position_id, None, exit_price, now, stop_hit=True)

    def _exit(
        self, position_id: UUID, shares: Decimal | None, exit_price: Decimal, now: datetime, *, stop_hit: bool
    ) -> CampaignPosition:
        position = self._changeable_position(position_id, "takes no exits")
        if shares is not None:
            _check_positive("Shares to close", shares)
        _check_positive("Exit price", exit_price)
        held = position.shares
        closing = held if shares is None else shares
        if closing > held:
            raise ExitExceedsHolding(position_id, closing, held)

        # Judged before anything changes: a refused exit leaves the campaign as it was.
        realized = to_cents((exit_price - position.entry_price) * closing, "Realized P&L")
        to_cents(position.realized_pnl + realized, "Realized P&L of the position")
        fully_closed = closing == held
        remaining_pnl = (
            ZERO_CENTS
            if fully_closed
            else to_cents((position.current_price - position.entry_price) * (held - closing), "Unrealized P&L")
        )
        _check_recordable_pnl(self.realized_pnl + realized, self.unrealized_pnl - position.current_pnl + remaining_pnl)
        position.shares = ZERO if fully_closed else held - closing
        position.status = PositionStatus.CLOSED if fully_closed else PositionStatus.PARTIAL
        position.realized_pnl += realized
        position.exit_price = exit_price
        if fully_closed:
            position.closed_at = now
        position.current_pnl = remaining_pnl
        position.updated_at = now
        self._recompute_totals()
        self._touch(now)
        self.events.append(PositionClosed(self.id, position, closing, exit_price, realized, fully_closed, stop_hit))

        if stop_hit and position.pattern_type == PatternType.SPRING:
            self._invalidate(SPRING_LOW_BREAK, now, price=exit_price)
        elif not self.open_positions():
            self._complete(ALL_POSITIONS_CLOSED, now)
        return position

    def _changeable_position(self, position_id: UUID, refused: str) -> CampaignPosition:
        """The open position a fill or exit acts on, once the campaign and the position can take it."""
        if not self.is_open:
            raise CampaignEnded(self.campaign_id, self.status, refused)
        position = next((p for p in self.positions if p.position_id == position_id), None)
        if position is None:
            raise PositionNotFound(self.campaign_id, position_id)
        if not position.is_open:
            raise PositionAlreadyClosed(position_id)
        return position

    # --- market prices ---------------------------------------------------------------------------------------

    def invalidation_level(self) -> tuple[Decimal, str] | None:
        """The price at or below which the campaign is invalidated, and the reason it would give; None when
        nothing is held or the campaign has ended. Cheap and changes nothing: check ticks with it.

        The stop of the open Spring position is the Spring low ("Spring low break"); without one, the lowest stop
        of the open positions ("Stop level break")."""
        if not self.is_open:
            return None
        held = self.open_positions()
        springs = [p.stop_loss for p in held if p.pattern_type == PatternType.SPRING]
        if springs:
            return min(springs), SPRING_LOW_BREAK
        if held:
            return min(p.stop_loss for p in held), STOP_LEVEL_BREAK
        return None

    def mark_to_market(self, price: Decimal, now: datetime) -> bool:
        """Value the open positions at a market price; True if that changed the campaign (one version step).

        A price that changes no position's price and breaks no level changes nothing: no version step, no event.
        Otherwise CampaignMarkedToMarket is recorded (when a position's price moved); a price at or below the
        invalidation level then invalidates the campaign, reporting the unrealized P&L at that price. The
        positions stay open: selling them is the exits' business, reported back as fills and exits.
        """
        if not self.is_open:
            raise CampaignEnded(self.campaign_id, self.status, "takes no market prices")
        _check_positive("Market price", price)
        # Every P&L first: one too large to record refuses the price before any position changes.
        moving = [(p, p.unrealized_pnl_at(price)) for p in self.open_positions() if p.current_price != price]
        _check_recordable_pnl(
            self.realized_pnl, self.unrealized_pnl + sum((pnl - p.current_pnl for p, pnl in moving), ZERO)
        )
        for position, pnl in moving:
            position.current_price = price
            position.current_pnl = pnl
            position.updated_at = now
        moved = bool(moving)
        level = self.invalidation_level()
        broken = level is not None and price <= level[0]
        if not moved and not broken:
            return False
        self._recompute_totals()
        self._touch(now)
        if moved:
            self.events.append(CampaignMarkedToMarket(self.id, price, self.unrealized_pnl, self.total_pnl))
        if level is not None and broken:
            self._invalidate(level[1], now, price=price)
        return True

    # --- lifecycle -------------------------------------------------------------------------------------------

    def check_version(self, expected_version: int) -> None:
        """Refuse to act on a campaign an operator saw at another version (optimistic locking, HTTP 409)."""
        if expected_version != self.version:
            raise VersionMismatch(expected_version, self.version, self.campaign_id)

    def change_status(self, to_status: CampaignStatus, now: datetime, reason: str | None = None) -> None:
        """An explicit lifecycle move with only a CampaignStatusChanged; one version step.

        Operators go through `operator_change_status`, which also records why a campaign ended."""
        self._transition(to_status, now, reason)
        self._touch(now)

    def operator_change_status(self, to_status: CampaignStatus, now: datetime, reason: str | None = None) -> None:
        """An operator's status change: MARKUP as asked, COMPLETED through `complete`, INVALIDATED through
        `invalidate` (a reason is required). Check the version first with `check_version`."""
        if to_status == CampaignStatus.INVALIDATED:
            self.invalidate(reason or "", now)
        elif to_status == CampaignStatus.COMPLETED:
            self.complete(now, reason)
        else:
            self.change_status(to_status, now, reason)

    def invalidate(self, reason: str, now: datetime) -> None:
        """The trading range broke, or an operator gave up on the campaign; one version step.

        Open positions stay as they are (selling them is the exits' business); their unrealized P&L at their last
        price is reported."""
        self._check_transition(CampaignStatus.INVALIDATED)
        if not reason.strip():
            raise ReasonRequired("Invalidating a campaign")
        self._invalidate(reason, now, price=None)
        self._touch(now)

    def complete(self, now: datetime, reason: str | None = None) -> None:
        """An operator ends an ACTIVE or MARKUP campaign as completed; one version step.

        It closes nothing: positions still open stay open, with their unrealized P&L, and the totals keep
        describing them. (Exits complete a campaign on their own when its last position closes.)"""
        self._check_transition(CampaignStatus.COMPLETED)
        self._complete(reason, now)
        self._touch(now)

    def _invalidate(self, reason: str, now: datetime, *, price: Decimal | None) -> None:
        self._check_transition(CampaignStatus.INVALIDATED)
        self.events.append(CampaignInvalidated(self.id, reason, price, self.unrealized_pnl))
        self._transition(CampaignStatus.INVALIDATED, now, reason)

    def _complete(self, reason: str | None, now: datetime) -> None:
        self._check_transition(CampaignStatus.COMPLETED)
        self.events.append(CampaignCompleted(self.id, reason, self.realized_pnl, self.total_pnl))
        self._transition(CampaignStatus.COMPLETED, now, reason)

    def _check_transition(self, to_status: CampaignStatus) -> None:
        if to_status not in ALLOWED_TRANSITIONS[self.status]:
            raise InvalidStatusTransition(self.status, to_status)

    def _transition(self, to_status: CampaignStatus, now: datetime, reason: str | None) -> None:
        self._check_transition(to_status)
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
        """Realized P&L of every position plus unrealized P&L of the shares still held, to the cent."""
        return _derive_totals(self.positions)["total_pnl"]

    def rebuild_totals(self, now: datetime) -> dict[str, tuple[Any, Any]]:
        """Repair stored totals from the positions: the differences found (see `recompute_totals`).

        A campaign that adds up changes nothing; one that did not takes one version step and records
        CampaignTotalsRebuilt. Ended campaigns are repaired too: this corrects the record, it is no new fact."""
        differences = recompute_totals(self)
        if differences:
            self._recompute_totals()
            self._touch(now)
            self.events.append(CampaignTotalsRebuilt(self.id, differences))
        return differences

    def _recompute_totals(self) -> None:
        for name, value in _derive_totals(self.positions).items():
            setattr(self, name, value)

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
