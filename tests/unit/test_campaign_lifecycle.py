"""The life of a campaign after it opens: fills, exits, market prices, invalidation, operators and repairs.

Pure domain, no fixtures. Unless a test says otherwise the portfolio is worth 100,000.00 and the Spring is
100 shares at 150.00 with its stop at 149.00: 100.00 dollars at risk, 0.1000% of the portfolio.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from campaign_manager.contracts import TradeSignalMessage
from campaign_manager.domain.campaign import (
    ALLOWED_TRANSITIONS,
    MAX_PORTFOLIO_HEAT_PERCENT,
    Campaign,
    CampaignPosition,
    CampaignStatus,
    EntrySignal,
    PatternType,
    PositionStatus,
    check_portfolio_heat,
    human_campaign_id,
    recompute_totals,
)
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
    CampaignInvalidated,
    CampaignMarkedToMarket,
    CampaignStatusChanged,
    CampaignTotalsRebuilt,
    PositionClosed,
    PositionFilled,
)
from campaign_manager.examples import trade_signal, trading_range

RANGE_START = datetime(2024, 10, 15, 13, 30, tzinfo=UTC)
OPENED_AT = datetime(2024, 10, 16, 14, 0, tzinfo=UTC)
T1 = OPENED_AT + timedelta(hours=1)
T2 = OPENED_AT + timedelta(hours=2)
T3 = OPENED_AT + timedelta(hours=3)

ACTIVE, MARKUP = CampaignStatus.ACTIVE, CampaignStatus.MARKUP
COMPLETED, INVALIDATED = CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED


# --- builders --------------------------------------------------------------------------------------------------


def signal(range_: dict[str, Any], pattern_type: str, entry: str, stop: str, shares: str) -> EntrySignal:
    """A well-formed signal of that range, as the consumer hands it to the domain."""
    phase = "C" if pattern_type == "SPRING" else "D"
    message = trade_signal(
        range_,
        signal_id=uuid4(),
        pattern_type=pattern_type,
        phase=phase,
        entry_price=entry,
        stop_loss=stop,
        position_size=shares,
    )
    return TradeSignalMessage.model_validate(message).to_entry_signal(None)


def campaign_of(*entries: tuple[str, str, str, str]) -> Campaign:
    """A campaign opened by the first (pattern, entry, stop, shares) and joined by the others; events collected."""
    range_ = trading_range(range_id=uuid4(), start_time=RANGE_START)
    first, *others = entries
    opening = signal(range_, *first)
    campaign = Campaign.open(opening, human_campaign_id(opening.symbol, RANGE_START, taken=()), OPENED_AT)
    for entry in others:
        campaign.add_position(signal(range_, *entry), OPENED_AT)
    campaign.collect_events()
    return campaign


SPRING = ("SPRING", "150.00", "149.00", "100")  # risk (150 - 149) x 100 = 100.00
SOS = ("SOS", "153.00", "152.00", "50")  # risk (153 - 152) x 50 = 50.00
LPS = ("LPS", "151.00", "150.00", "20")  # risk (151 - 150) x 20 = 20.00


def spring_campaign() -> Campaign:
    """ACTIVE, one Spring position, version 1."""
    return campaign_of(SPRING)


def spring_and_sos_campaign() -> Campaign:
    """MARKUP, Spring then SOS, version 2."""
    return campaign_of(SPRING, SOS)


def ended_campaign(status: CampaignStatus) -> Campaign:
    campaign = spring_and_sos_campaign()
    if status == COMPLETED:
        campaign.complete(OPENED_AT, reason="setup")
    else:
        campaign.invalidate("setup", OPENED_AT)
    campaign.collect_events()
    return campaign


def event_types(campaign: Campaign) -> list[type]:
    return [type(event) for event in campaign.collect_events()]


# --- fills -----------------------------------------------------------------------------------------------------


def test_fill_replaces_the_planned_price_and_size_and_recomputes_risk_and_allocation() -> None:
    # The Spring 148.50/146.50 x 1,000 was planned: risk 2,000.00 = 2.0000% of 100,000.
    campaign = campaign_of(("SPRING", "148.50", "146.50", "1000"))
    (spring,) = campaign.positions
    filled_at = OPENED_AT + timedelta(minutes=5)

    # The broker fills 900 shares at 148.60.
    campaign.fill_position(spring.position_id, Decimal("148.60"), Decimal("900"), T1, filled_at=filled_at)

    # risk (148.60 - 146.50) x 900 = 2.10 x 900 = 1,890.00; 1,890 / 100,000 x 100 = 1.8900%
    assert (spring.entry_price, spring.shares, spring.entry_shares) == (Decimal("148.60"), 900, 900)
    assert spring.risk_amount == Decimal("1890.00")
    assert str(spring.allocation_percent) == "1.8900"
    assert (spring.entry_date, spring.filled_at, spring.updated_at) == (filled_at, filled_at, T1)
    # The fill is the position's first real price: nothing made or lost yet.
    assert (spring.current_price, spring.current_pnl) == (Decimal("148.60"), Decimal("0.00"))
    assert spring.status == PositionStatus.OPEN
    # The campaign totals follow.
    assert (campaign.total_risk, campaign.current_risk) == (Decimal("1890.00"), Decimal("1890.00"))
    assert campaign.total_allocation == Decimal("1.89")
    assert (campaign.total_shares, campaign.weighted_avg_entry) == (Decimal("900"), Decimal("148.60"))
    # One change, one version step, one event that keeps the plan it replaced.
    assert campaign.version == 2
    assert campaign.collect_events() == [
        PositionFilled(
            campaign.id, spring, Decimal("148.60"), Decimal("900"), Decimal("148.50"), Decimal("1000"), filled_at
        )
    ]


def test_fill_without_a_fill_time_is_dated_now() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    campaign.fill_position(spring.position_id, Decimal("150.00"), Decimal("100"), T1)

    assert spring.entry_date == spring.filled_at == T1


def test_a_later_fill_report_replaces_the_earlier_one() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    # The broker reports 60 shares at 150.10, then the cumulative 100 shares at an average of 150.05.
    campaign.fill_position(spring.position_id, Decimal("150.10"), Decimal("60"), T1)
    campaign.fill_position(spring.position_id, Decimal("150.05"), Decimal("100"), T2)

    # risk (150.05 - 149.00) x 100 = 105.00; two changes, two version steps
    assert (spring.entry_price, spring.shares, spring.risk_amount) == (Decimal("150.05"), 100, Decimal("105.00"))
    assert campaign.version == 3


def test_fill_lifting_the_campaign_over_five_percent_is_rejected() -> None:
    # 2% + 2% + 1% = 5%: the LPS planned 150.00/149.00 x 1,000 = 1,000.00 = 1%
    campaign = campaign_of(
        ("SPRING", "150.00", "149.00", "2000"), ("SOS", "150.00", "149.00", "2000"), ("LPS", "150.00", "149.00", "1000")
    )
    lps = campaign.positions[-1]
    before = copy.deepcopy(campaign)

    # Filled a cent higher: (150.01 - 149.00) x 1,000 = 1,010.00 = 1.01%; 4% + 1.01% = 5.01% > 5%
    with pytest.raises(RuleViolation, match=r"Campaign allocation exceeded \(5% max\)"):
        campaign.fill_position(lps.position_id, Decimal("150.01"), Decimal("1000"), T1)

    assert campaign == before
    assert campaign.events == []


def test_fill_passing_four_and_a_half_percent_records_the_allocation_warning() -> None:
    # 2% + 2% + 0.5% = 4.5%, at the threshold: the LPS planned (150 - 149) x 500 = 500.00
    campaign = campaign_of(
        ("SPRING", "150.00", "149.00", "2000"), ("SOS", "150.00", "149.00", "2000"), ("LPS", "150.00", "149.00", "500")
    )
    lps = campaign.positions[-1]

    # (150.20 - 149.00) x 500 = 600.00 = 0.6%; 4% + 0.6% = 4.6% > 4.5%
    campaign.fill_position(lps.position_id, Decimal("150.20"), Decimal("500"), T1)

    assert campaign.collect_events()[1:] == [AllocationNearLimit(campaign.id, Decimal("4.6"))]


@pytest.mark.parametrize("fill_price", ["149.00", "148.99"])
def test_fill_at_or_below_the_stop_is_rejected(fill_price: str) -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    with pytest.raises(FillAtOrBelowStop, match=f"Fill price {fill_price} .* is not above its stop 149.00"):
        campaign.fill_position(spring.position_id, Decimal(fill_price), Decimal("100"), T1)

    assert campaign.version == 1


def test_fill_after_an_exit_is_rejected() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)

    with pytest.raises(PositionAlreadyExited, match="has exits already"):
        campaign.fill_position(spring.position_id, Decimal("150.00"), Decimal("60"), T2)


def test_fill_of_a_campaign_stored_without_portfolio_value_is_rejected() -> None:
    campaign = spring_campaign()
    campaign.portfolio_value = None

    with pytest.raises(RuleViolation, match="Portfolio value unknown"):
        campaign.fill_position(campaign.positions[0].position_id, Decimal("150.00"), Decimal("100"), T1)


def test_campaign_keeps_the_portfolio_value_of_its_opening_signal() -> None:
    assert spring_campaign().portfolio_value == Decimal("100000.00")


# --- exits -----------------------------------------------------------------------------------------------------


def test_partial_close_realizes_pnl_on_the_shares_sold_and_keeps_the_rest() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    # Sell 40 of the 100 shares bought at 150.00, at 155.50.
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)

    # (155.50 - 150.00) x 40 = 5.50 x 40 = 220.00 realized; 100 - 40 = 60 shares left
    assert spring.realized_pnl == Decimal("220.00")
    assert (spring.shares, spring.entry_shares) == (Decimal("60"), Decimal("100"))
    assert (spring.status, spring.exit_price, spring.closed_at) == (PositionStatus.PARTIAL, Decimal("155.50"), None)
    assert campaign.realized_pnl == Decimal("220.00")
    assert campaign.total_shares == Decimal("60")
    # The shares held still cost 150.00 each.
    assert campaign.weighted_avg_entry == Decimal("150.00")
    # Open risk (150 - 149) x 60 = 60.00; the risk taken at entry stays 100.00.
    assert campaign.current_risk == Decimal("60.00")
    assert campaign.total_risk == Decimal("100.00")
    assert campaign.total_allocation == Decimal("0.1")
    # The held shares are still valued at 150.00: nothing unrealized, so the total is what was realized.
    assert (campaign.unrealized_pnl, campaign.total_pnl) == (Decimal("0.00"), Decimal("220.00"))
    # One exit, one version step; the campaign goes on.
    assert campaign.version == 2
    assert campaign.status == ACTIVE
    assert campaign.collect_events() == [
        PositionClosed(campaign.id, spring, Decimal("40"), Decimal("155.50"), Decimal("220.00"), False, False)
    ]


def test_partial_close_at_a_loss_realizes_a_negative_pnl() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    campaign.partially_close_position(spring.position_id, Decimal("30"), Decimal("148.25"), T1)

    # (148.25 - 150.00) x 30 = -1.75 x 30 = -52.50
    assert campaign.realized_pnl == spring.realized_pnl == Decimal("-52.50")


def test_realized_pnl_accumulates_over_exits_and_the_last_exit_closes_the_position() -> None:
    campaign = spring_and_sos_campaign()
    spring, _ = campaign.positions

    # 40 at 155.50: +220.00; then the 60 left at 152.00: (152.00 - 150.00) x 60 = +120.00
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)
    campaign.close_position(spring.position_id, Decimal("152.00"), T2)

    # 220.00 + 120.00 = 340.00
    assert spring.realized_pnl == campaign.realized_pnl == Decimal("340.00")
    assert (spring.status, spring.shares, spring.exit_price, spring.closed_at) == (
        PositionStatus.CLOSED,
        0,
        Decimal("152.00"),
        T2,
    )
    assert spring.current_pnl == Decimal("0.00")
    # Only the SOS is held now: 50 at 153.00, open risk (153 - 152) x 50 = 50.00.
    assert (campaign.total_shares, campaign.weighted_avg_entry) == (Decimal("50"), Decimal("153.00"))
    assert campaign.current_risk == Decimal("50.00")
    # 100.00 + 50.00 taken at entry
    assert campaign.total_risk == Decimal("150.00")
    assert campaign.version == 4
    *_, last = campaign.collect_events()
    assert last == PositionClosed(campaign.id, spring, Decimal("60"), Decimal("152.00"), Decimal("120.00"), True, False)


def test_selling_every_share_in_a_partial_close_closes_the_position() -> None:
    campaign = spring_and_sos_campaign()
    spring, _ = campaign.positions

    campaign.partially_close_position(spring.position_id, Decimal("100"), Decimal("151.00"), T1)

    assert spring.status == PositionStatus.CLOSED
    (closed,) = campaign.collect_events()
    assert isinstance(closed, PositionClosed)
    assert closed.fully_closed


def test_closing_one_of_two_positions_leaves_the_campaign_open() -> None:
    campaign = spring_and_sos_campaign()
    spring, sos = campaign.positions

    campaign.close_position(spring.position_id, Decimal("151.00"), T1)

    assert campaign.status == MARKUP
    assert campaign.completed_at is None
    assert campaign.open_positions() == [sos]


@pytest.mark.parametrize("opening", [SPRING, SOS], ids=["ACTIVE", "MARKUP"])
def test_closing_the_last_open_position_completes_the_campaign(opening: tuple[str, str, str, str]) -> None:
    campaign = campaign_of(opening)
    from_status = campaign.status
    (position,) = campaign.positions

    campaign.close_position(position.position_id, Decimal("156.00"), T1)

    assert campaign.status == COMPLETED
    assert campaign.completed_at == T1
    assert campaign.invalidation_reason is None
    # One exit, one version step, though the status changed with it.
    assert campaign.version == 2
    events = campaign.collect_events()
    assert [type(event) for event in events] == [PositionClosed, CampaignCompleted, CampaignStatusChanged]
    # Spring (156 - 150) x 100 = 600.00; SOS (156 - 153) x 50 = 150.00
    realized = campaign.realized_pnl
    assert realized == {SPRING: Decimal("600.00"), SOS: Decimal("150.00")}[opening]
    assert events[1:] == [
        CampaignCompleted(campaign.id, "All positions closed", realized, realized),
        CampaignStatusChanged(campaign.id, from_status, COMPLETED, "All positions closed"),
    ]


def test_stopped_spring_invalidates_the_campaign_with_spring_low_break() -> None:
    campaign = spring_and_sos_campaign()
    spring, sos = campaign.positions
    # The SOS is valued at 151.00: (151 - 153) x 50 = -100.00 unrealized
    campaign.mark_to_market(Decimal("151.00"), T1)
    campaign.collect_events()

    campaign.stop_position(spring.position_id, Decimal("148.90"), T2)

    # (148.90 - 150.00) x 100 = -110.00 realized
    assert spring.realized_pnl == Decimal("-110.00")
    assert campaign.status == INVALIDATED
    assert campaign.invalidation_reason == "Spring low break"
    assert campaign.completed_at == T2
    # The SOS is still held: selling it is the exits' business.
    assert sos.status == PositionStatus.OPEN
    assert campaign.version == 4
    assert campaign.collect_events() == [
        PositionClosed(campaign.id, spring, Decimal("100"), Decimal("148.90"), Decimal("-110.00"), True, True),
        CampaignInvalidated(campaign.id, "Spring low break", Decimal("148.90"), Decimal("-100.00")),
        CampaignStatusChanged(campaign.id, MARKUP, INVALIDATED, "Spring low break"),
    ]


def test_stopped_spring_that_was_the_last_position_invalidates_rather_than_completes() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    campaign.stop_position(spring.position_id, Decimal("149.00"), T1)

    assert campaign.status == INVALIDATED
    assert event_types(campaign) == [PositionClosed, CampaignInvalidated, CampaignStatusChanged]


def test_stopped_sos_does_not_invalidate_the_campaign() -> None:
    campaign = spring_and_sos_campaign()
    _, sos = campaign.positions

    campaign.stop_position(sos.position_id, Decimal("152.00"), T1)

    # (152 - 153) x 50 = -50.00; the Spring is still held, the campaign goes on.
    assert campaign.realized_pnl == Decimal("-50.00")
    assert campaign.status == MARKUP
    (closed,) = campaign.collect_events()
    assert isinstance(closed, PositionClosed)
    assert closed.stop_hit


def test_stopped_last_position_that_is_no_spring_completes_the_campaign() -> None:
    campaign = campaign_of(SOS)

    campaign.stop_position(campaign.positions[0].position_id, Decimal("152.00"), T1)

    assert campaign.status == COMPLETED


def test_spring_closed_without_its_stop_being_hit_does_not_invalidate() -> None:
    campaign = spring_and_sos_campaign()
    spring, _ = campaign.positions

    campaign.close_position(spring.position_id, Decimal("148.00"), T1)

    assert campaign.status == MARKUP


# --- refused exits and fills -----------------------------------------------------------------------------------


def assert_refused_and_unchanged(campaign: Campaign, error: type[Exception], act: Any, match: str) -> None:
    before = copy.deepcopy(campaign)

    with pytest.raises(error, match=match):
        act()

    assert campaign == before
    assert campaign.events == []


def test_exit_of_an_unknown_position_is_refused() -> None:
    campaign = spring_campaign()
    unknown = uuid4()

    assert_refused_and_unchanged(
        campaign,
        PositionNotFound,
        lambda: campaign.close_position(unknown, Decimal("151.00"), T1),
        f"Position {unknown} is not part of campaign AAPL-2024-10-15",
    )


def test_an_exit_whose_pnl_could_not_be_recorded_is_refused() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    # (999,999,999 - 150) x 100 = 99,999,984,900.00: beyond NUMERIC(12,2)'s 9,999,999,999.99
    assert_refused_and_unchanged(
        campaign,
        AmountOutOfRange,
        lambda: campaign.close_position(spring.position_id, Decimal("999999999"), T1),
        r"Realized P&L 99999984900\.00 is beyond the largest amount a campaign records \(±9999999999\.99\)",
    )


def test_a_market_price_whose_pnl_could_not_be_recorded_is_refused_before_any_position_moves() -> None:
    campaign = spring_and_sos_campaign()

    # Spring (999,999,999 - 150) x 100 would not fit; nothing changes, the SOS position included
    assert_refused_and_unchanged(
        campaign,
        AmountOutOfRange,
        lambda: campaign.mark_to_market(Decimal("999999999"), T1),
        r"Unrealized P&L 99999984900\.00 is beyond",
    )


def test_a_market_price_is_refused_when_the_campaign_total_could_not_be_recorded() -> None:
    campaign = spring_and_sos_campaign()

    # Spring (70,000,000 - 150) x 100 = 6,999,985,000.00 and SOS (70,000,000 - 153) x 50 = 3,499,992,350.00 fit
    # one by one; together 10,499,977,350.00 does not
    assert_refused_and_unchanged(
        campaign,
        AmountOutOfRange,
        lambda: campaign.mark_to_market(Decimal("70000000"), T1),
        r"Unrealized P&L of the campaign 10499977350\.00 is beyond",
    )


def test_an_exit_is_refused_when_the_campaigns_realized_pnl_could_not_be_recorded() -> None:
    campaign = spring_and_sos_campaign()
    spring, sos = campaign.positions
    campaign.close_position(spring.position_id, Decimal("70000000"), T1)  # realizes 6,999,985,000.00
    campaign.collect_events()

    # SOS (100,000,000 - 153) x 50 = 4,999,992,350.00 fits alone; the campaign's 11,999,977,350.00 does not
    assert_refused_and_unchanged(
        campaign,
        AmountOutOfRange,
        lambda: campaign.close_position(sos.position_id, Decimal("100000000"), T2),
        r"Realized P&L of the campaign 11999977350\.00 is beyond",
    )


def test_the_largest_recordable_pnl_is_accepted() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions

    # (100,000,149.9999999 - 150) x 100 = 9,999,999,999.99999 -> 10,000,000,000.00 to the cent: refused
    with pytest.raises(AmountOutOfRange):
        campaign.close_position(spring.position_id, Decimal("100000149.9999999"), T1)
    # (100,000,149.9999 - 150) x 100 = 9,999,999,999.99 exactly: recorded
    campaign.close_position(spring.position_id, Decimal("100000149.9999"), T1)
    assert campaign.realized_pnl == Decimal("9999999999.99")


def test_closing_more_shares_than_held_is_refused() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)
    campaign.collect_events()

    # 60 held, 61 asked
    assert_refused_and_unchanged(
        campaign,
        ExitExceedsHolding,
        lambda: campaign.partially_close_position(spring.position_id, Decimal("61"), Decimal("155.50"), T2),
        f"Cannot close 61 shares of position {spring.position_id}: only 60 held",
    )


@pytest.mark.parametrize("exit_kind", ["partial", "close", "stop", "fill"])
def test_acting_on_a_closed_position_is_refused(exit_kind: str) -> None:
    campaign = spring_and_sos_campaign()
    spring, _ = campaign.positions
    campaign.close_position(spring.position_id, Decimal("151.00"), T1)
    campaign.collect_events()
    act = {
        "partial": lambda: campaign.partially_close_position(spring.position_id, Decimal("1"), Decimal("151"), T2),
        "close": lambda: campaign.close_position(spring.position_id, Decimal("151.00"), T2),
        "stop": lambda: campaign.stop_position(spring.position_id, Decimal("149.00"), T2),
        "fill": lambda: campaign.fill_position(spring.position_id, Decimal("150.00"), Decimal("100"), T2),
    }[exit_kind]

    assert_refused_and_unchanged(campaign, PositionAlreadyClosed, act, "is already CLOSED")


@pytest.mark.parametrize("price", ["0", "-1.00"])
@pytest.mark.parametrize("exit_kind", ["partial", "close", "stop"])
def test_exit_price_must_be_positive(exit_kind: str, price: str) -> None:
    campaign = spring_campaign()
    position_id = campaign.positions[0].position_id
    act = {
        "partial": lambda: campaign.partially_close_position(position_id, Decimal("10"), Decimal(price), T1),
        "close": lambda: campaign.close_position(position_id, Decimal(price), T1),
        "stop": lambda: campaign.stop_position(position_id, Decimal(price), T1),
    }[exit_kind]

    assert_refused_and_unchanged(campaign, NotPositive, act, f"Exit price must be greater than 0, got {price}")


@pytest.mark.parametrize(
    ("act", "match"),
    [
        (lambda c, pid: c.partially_close_position(pid, Decimal("0"), Decimal("151"), T1), "Shares to close"),
        (lambda c, pid: c.fill_position(pid, Decimal("0"), Decimal("100"), T1), "Fill price"),
        (lambda c, pid: c.fill_position(pid, Decimal("150"), Decimal("0"), T1), "Filled shares"),
        (lambda c, pid: c.mark_to_market(Decimal("0"), T1), "Market price"),
    ],
    ids=["shares to close", "fill price", "filled shares", "market price"],
)
def test_other_prices_and_sizes_must_be_positive_too(act: Any, match: str) -> None:
    campaign = spring_campaign()
    position_id = campaign.positions[0].position_id

    assert_refused_and_unchanged(campaign, NotPositive, lambda: act(campaign, position_id), match)


@pytest.mark.parametrize("status", [COMPLETED, INVALIDATED])
@pytest.mark.parametrize(
    ("act", "refused"),
    [
        (lambda c, pid: c.fill_position(pid, Decimal("150"), Decimal("100"), T1), "takes no fills"),
        (lambda c, pid: c.partially_close_position(pid, Decimal("10"), Decimal("151"), T1), "takes no exits"),
        (lambda c, pid: c.close_position(pid, Decimal("151"), T1), "takes no exits"),
        (lambda c, pid: c.stop_position(pid, Decimal("149"), T1), "takes no exits"),
        (lambda c, pid: c.mark_to_market(Decimal("151"), T1), "takes no market prices"),
    ],
    ids=["fill", "partial close", "close", "stop", "market price"],
)
def test_ended_campaign_refuses_every_change(status: CampaignStatus, act: Any, refused: str) -> None:
    campaign = ended_campaign(status)
    # The campaign was ended by hand, so its positions are still open.
    position_id = campaign.positions[0].position_id

    assert_refused_and_unchanged(
        campaign,
        CampaignEnded,
        lambda: act(campaign, position_id),
        f"Campaign AAPL-2024-10-15 is {status.value} and {refused}",
    )


# --- market prices ---------------------------------------------------------------------------------------------


def test_price_above_the_invalidation_level_updates_unrealized_pnl() -> None:
    campaign = spring_and_sos_campaign()
    spring, sos = campaign.positions

    changed = campaign.mark_to_market(Decimal("155.00"), T1)

    # Spring (155 - 150) x 100 = 500.00; SOS (155 - 153) x 50 = 100.00; 500 + 100 = 600.00
    assert changed
    assert (spring.current_price, spring.current_pnl, spring.updated_at) == (Decimal("155.00"), 500, T1)
    assert (sos.current_price, sos.current_pnl) == (Decimal("155.00"), Decimal("100.00"))
    assert (campaign.unrealized_pnl, campaign.total_pnl) == (Decimal("600.00"), Decimal("600.00"))
    assert campaign.status == MARKUP
    # A stored change: one version step.
    assert campaign.version == 3
    assert campaign.collect_events() == [
        CampaignMarkedToMarket(campaign.id, Decimal("155.00"), Decimal("600.00"), Decimal("600.00"))
    ]


def test_price_that_changes_nothing_takes_no_version_step() -> None:
    campaign = spring_and_sos_campaign()
    campaign.mark_to_market(Decimal("155.00"), T1)
    campaign.collect_events()

    # The same price again (written differently).
    changed = campaign.mark_to_market(Decimal("155.0"), T2)

    assert not changed
    assert campaign.version == 3
    assert campaign.updated_at == T1
    assert campaign.events == []


def test_total_pnl_adds_realized_and_unrealized() -> None:
    campaign = spring_campaign()
    (spring,) = campaign.positions
    # +220.00 realized on 40 shares; 60 left
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)

    campaign.mark_to_market(Decimal("156.00"), T2)

    # (156 - 150) x 60 = 360.00 unrealized; 220.00 + 360.00 = 580.00
    assert spring.current_pnl == campaign.unrealized_pnl == Decimal("360.00")
    assert campaign.total_pnl == campaign.calculate_total_pnl() == Decimal("580.00")


def test_price_through_the_spring_stop_invalidates_with_unrealized_pnl_at_that_price() -> None:
    campaign = spring_and_sos_campaign()
    assert campaign.invalidation_level() == (Decimal("149.00"), "Spring low break")

    campaign.mark_to_market(Decimal("148.90"), T1)

    # Spring (148.90 - 150) x 100 = -110.00; SOS (148.90 - 153) x 50 = -205.00; together -315.00
    assert campaign.unrealized_pnl == Decimal("-315.00")
    assert campaign.status == INVALIDATED
    assert campaign.invalidation_reason == "Spring low break"
    assert campaign.completed_at == T1
    # Both positions are still held at that price.
    assert [p.status for p in campaign.positions] == [PositionStatus.OPEN, PositionStatus.OPEN]
    # One price, one version step.
    assert campaign.version == 3
    assert campaign.collect_events() == [
        CampaignMarkedToMarket(campaign.id, Decimal("148.90"), Decimal("-315.00"), Decimal("-315.00")),
        CampaignInvalidated(campaign.id, "Spring low break", Decimal("148.90"), Decimal("-315.00")),
        CampaignStatusChanged(campaign.id, MARKUP, INVALIDATED, "Spring low break"),
    ]


def test_price_exactly_at_the_spring_stop_invalidates() -> None:
    campaign = spring_campaign()

    campaign.mark_to_market(Decimal("149.00"), T1)

    assert campaign.status == INVALIDATED


def test_with_an_open_spring_only_the_spring_low_counts() -> None:
    campaign = spring_and_sos_campaign()

    # 151.00 is below the SOS stop (152.00) but above the Spring low (149.00).
    campaign.mark_to_market(Decimal("151.00"), T1)

    assert campaign.status == MARKUP


def test_campaign_without_a_spring_is_invalidated_at_its_lowest_stop() -> None:
    # SOS stop 152.00, LPS stop 150.00: the lowest is 150.00
    campaign = campaign_of(SOS, LPS)
    assert campaign.invalidation_level() == (Decimal("150.00"), "Stop level break")

    # 150.01 is above it; 150.00 is at it.
    campaign.mark_to_market(Decimal("150.01"), T1)
    assert campaign.status == MARKUP
    campaign.mark_to_market(Decimal("150.00"), T2)

    assert campaign.status == INVALIDATED
    assert campaign.invalidation_reason == "Stop level break"


def test_once_the_spring_is_sold_the_lowest_stop_of_the_rest_is_the_level() -> None:
    campaign = campaign_of(SPRING, SOS, LPS)
    spring = campaign.positions[0]

    campaign.close_position(spring.position_id, Decimal("155.00"), T1)

    # SOS 152.00, LPS 150.00
    assert campaign.invalidation_level() == (Decimal("150.00"), "Stop level break")


def test_invalidation_level_changes_nothing() -> None:
    campaign = spring_campaign()
    before = copy.deepcopy(campaign)

    campaign.invalidation_level()

    assert campaign == before


@pytest.mark.parametrize("status", [COMPLETED, INVALIDATED])
def test_ended_campaign_has_no_invalidation_level(status: CampaignStatus) -> None:
    assert ended_campaign(status).invalidation_level() is None


def test_market_price_leaves_closed_positions_alone() -> None:
    campaign = spring_and_sos_campaign()
    spring, sos = campaign.positions
    campaign.close_position(spring.position_id, Decimal("151.00"), T1)

    campaign.mark_to_market(Decimal("160.00"), T2)

    # The Spring keeps its last price; only the SOS moves: (160 - 153) x 50 = 350.00
    assert (spring.current_price, spring.current_pnl) == (Decimal("150.00"), Decimal("0.00"))
    assert sos.current_pnl == campaign.unrealized_pnl == Decimal("350.00")


# --- the range, operators and versions -------------------------------------------------------------------------


def test_broken_trading_range_invalidates_the_campaign_with_its_reason() -> None:
    campaign = spring_and_sos_campaign()
    campaign.mark_to_market(Decimal("151.00"), T1)
    campaign.collect_events()

    campaign.invalidate("Trading range invalidated", T2)

    # Unrealized at the last price: Spring (151 - 150) x 100 = 100.00; SOS (151 - 153) x 50 = -100.00; 0.00
    assert (campaign.status, campaign.invalidation_reason, campaign.completed_at) == (
        INVALIDATED,
        "Trading range invalidated",
        T2,
    )
    assert campaign.version == 4
    assert campaign.collect_events() == [
        CampaignInvalidated(campaign.id, "Trading range invalidated", None, Decimal("0.00")),
        CampaignStatusChanged(campaign.id, MARKUP, INVALIDATED, "Trading range invalidated"),
    ]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_operator_invalidation_needs_a_reason(reason: str | None) -> None:
    campaign = spring_campaign()

    assert_refused_and_unchanged(
        campaign,
        ReasonRequired,
        lambda: campaign.operator_change_status(INVALIDATED, T1, reason),
        "Invalidating a campaign needs a reason",
    )


@pytest.mark.parametrize("opening", [SPRING, SOS], ids=["ACTIVE", "MARKUP"])
def test_operator_may_complete_an_open_campaign_without_closing_its_positions(
    opening: tuple[str, str, str, str],
) -> None:
    campaign = campaign_of(opening)
    from_status = campaign.status

    campaign.operator_change_status(COMPLETED, T1, "target reached")

    assert (campaign.status, campaign.completed_at, campaign.version) == (COMPLETED, T1, 2)
    # Nothing was sold: the position is still held and still counted.
    assert campaign.positions[0].status == PositionStatus.OPEN
    assert campaign.total_shares == campaign.positions[0].shares
    assert campaign.collect_events() == [
        CampaignCompleted(campaign.id, "target reached", Decimal("0.00"), Decimal("0.00")),
        CampaignStatusChanged(campaign.id, from_status, COMPLETED, "target reached"),
    ]


def test_operator_may_invalidate_an_open_campaign_with_a_reason() -> None:
    campaign = spring_campaign()

    campaign.operator_change_status(INVALIDATED, T1, "news")

    assert (campaign.status, campaign.invalidation_reason, campaign.version) == (INVALIDATED, "news", 2)
    assert event_types(campaign) == [CampaignInvalidated, CampaignStatusChanged]


def test_operator_may_move_an_active_campaign_to_markup() -> None:
    campaign = spring_campaign()

    campaign.operator_change_status(MARKUP, T1, "SOS seen")

    assert (campaign.status, campaign.version) == (MARKUP, 2)
    assert campaign.collect_events() == [CampaignStatusChanged(campaign.id, ACTIVE, MARKUP, "SOS seen")]


def campaign_in(status: CampaignStatus) -> Campaign:
    if status in (COMPLETED, INVALIDATED):
        return ended_campaign(status)
    return campaign_of(SPRING) if status == ACTIVE else campaign_of(SOS)


ALL_PAIRS = [(a, b) for a in CampaignStatus for b in CampaignStatus]
ALLOWED = [(a, b) for a, b in ALL_PAIRS if b in ALLOWED_TRANSITIONS[a]]


@pytest.mark.parametrize(("from_status", "to_status"), ALLOWED)
def test_operator_allowed_transition_takes_one_version_step(
    from_status: CampaignStatus, to_status: CampaignStatus
) -> None:
    campaign = campaign_in(from_status)
    version = campaign.version

    campaign.operator_change_status(to_status, T1, "operator")

    assert campaign.status == to_status
    assert campaign.version == version + 1
    assert campaign.collect_events()[-1] == CampaignStatusChanged(campaign.id, from_status, to_status, "operator")


@pytest.mark.parametrize(("from_status", "to_status"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_operator_forbidden_transition_names_both_statuses(
    from_status: CampaignStatus, to_status: CampaignStatus
) -> None:
    campaign = campaign_in(from_status)

    # Even without a reason, the transition itself is what is refused.
    assert_refused_and_unchanged(
        campaign,
        InvalidStatusTransition,
        lambda: campaign.operator_change_status(to_status, T1),
        f"Invalid status transition: {from_status.value} -> {to_status.value}",
    )


@pytest.mark.parametrize("status", [COMPLETED, INVALIDATED])
def test_ended_campaign_cannot_be_invalidated_or_completed_again(status: CampaignStatus) -> None:
    campaign = ended_campaign(status)

    with pytest.raises(InvalidStatusTransition):
        campaign.invalidate("again", T1)
    with pytest.raises(InvalidStatusTransition):
        campaign.complete(T1)


def test_version_check_passes_for_the_current_version() -> None:
    campaign = spring_and_sos_campaign()

    campaign.check_version(2)


def test_version_check_names_the_expected_and_the_actual_version() -> None:
    campaign = spring_and_sos_campaign()

    with pytest.raises(VersionMismatch) as raised:
        campaign.check_version(1)

    assert (raised.value.expected, raised.value.actual) == (1, 2)
    assert str(raised.value) == "Campaign AAPL-2024-10-15 is at version 2, not the expected version 1"


# --- portfolio heat --------------------------------------------------------------------------------------------


def test_portfolio_heat_limit_is_ten_percent() -> None:
    assert Decimal("10") == MAX_PORTFOLIO_HEAT_PERCENT


def test_portfolio_heat_of_exactly_ten_percent_is_allowed() -> None:
    # 6,000.00 open + 4,000.00 new = 10,000.00 = 10% of 100,000.00
    check_portfolio_heat(Decimal("6000.00"), Decimal("4000.00"), Decimal("100000.00"))


def test_portfolio_heat_of_ten_point_zero_one_percent_is_rejected() -> None:
    # 6,000.00 open + 4,010.00 new = 10,010.00 = 10.01% of 100,000.00
    with pytest.raises(RuleViolation, match=r"Portfolio heat limit exceeded \(10% max\)") as raised:
        check_portfolio_heat(Decimal("6000.00"), Decimal("4010.00"), Decimal("100000.00"))

    assert raised.value.reason == "Portfolio heat limit exceeded (10% max)"


def test_portfolio_heat_counts_a_single_cent_over() -> None:
    # 10,000.01 of 100,000.00 is 10.00001%
    with pytest.raises(RuleViolation):
        check_portfolio_heat(Decimal("0"), Decimal("10000.01"), Decimal("100000.00"))


# --- rebuilding totals -----------------------------------------------------------------------------------------


def test_totals_kept_change_by_change_agree_with_a_rebuild() -> None:
    campaign = campaign_of(SPRING, SOS, LPS)
    spring, sos, lps = campaign.positions
    campaign.fill_position(sos.position_id, Decimal("153.10"), Decimal("50"), T1)
    campaign.partially_close_position(spring.position_id, Decimal("40"), Decimal("155.50"), T1)
    campaign.mark_to_market(Decimal("154.25"), T2)
    campaign.close_position(lps.position_id, Decimal("154.00"), T3)

    assert recompute_totals(campaign) == {}


def test_recompute_reports_drifted_totals_without_changing_them() -> None:
    campaign = spring_and_sos_campaign()
    campaign.total_risk = Decimal("999.00")
    campaign.weighted_avg_entry = None

    differences = recompute_totals(campaign)

    # 100.00 + 50.00 = 150.00; (100 x 150 + 50 x 153) / 150 = 22,650 / 150 = 151.00
    assert differences == {
        "total_risk": (Decimal("999.00"), Decimal("150.00")),
        "weighted_avg_entry": (None, Decimal("151.00")),
    }
    assert campaign.total_risk == Decimal("999.00")


def test_rebuild_repairs_drifted_totals_in_one_version_step() -> None:
    campaign = spring_and_sos_campaign()
    campaign.current_risk = Decimal("1.00")

    differences = campaign.rebuild_totals(T1)

    assert differences == {"current_risk": (Decimal("1.00"), Decimal("150.00"))}
    assert campaign.current_risk == Decimal("150.00")
    assert (campaign.version, campaign.updated_at) == (3, T1)
    assert campaign.collect_events() == [CampaignTotalsRebuilt(campaign.id, differences)]


def test_rebuild_of_a_consistent_campaign_changes_nothing() -> None:
    campaign = spring_and_sos_campaign()
    before = copy.deepcopy(campaign)

    assert campaign.rebuild_totals(T1) == {}
    assert campaign == before
    assert campaign.events == []


# --- positions read back from storage --------------------------------------------------------------------------


def test_position_stored_before_entry_shares_existed_takes_its_shares_as_entry_size() -> None:
    position = spring_campaign().positions[0]
    stored = {f.name: getattr(position, f.name) for f in dataclasses.fields(CampaignPosition)}
    for name in ("entry_shares", "realized_pnl", "exit_price", "filled_at", "closed_at"):
        del stored[name]

    restored = CampaignPosition(**stored)

    assert restored.entry_shares == restored.shares == Decimal("100")
    assert restored.realized_pnl == Decimal("0.00")
    assert (restored.exit_price, restored.filled_at, restored.closed_at) == (None, None, None)


# --- the whole story -------------------------------------------------------------------------------------------


def floats_in(value: object) -> list[object]:
    if isinstance(value, float):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [f for field in dataclasses.fields(value) for f in floats_in(getattr(value, field.name))]
    if isinstance(value, list | tuple):
        return [f for item in value for f in floats_in(item)]
    if isinstance(value, dict):
        return [f for item in value.values() for f in floats_in(item)]
    return []


def test_spring_sos_lps_campaign_from_fills_to_completion_one_version_step_per_change() -> None:
    campaign = campaign_of(SPRING, SOS, LPS)
    spring, sos, lps = campaign.positions
    # Opened by the Spring (1), joined by the SOS (2) and the LPS (3).
    assert (campaign.status, campaign.version) == (MARKUP, 3)

    # Each position is filled as planned, except the SOS at 153.10: (153.10 - 152) x 50 = 55.00 at risk.
    campaign.fill_position(spring.position_id, Decimal("150.00"), Decimal("100"), T1)
    campaign.fill_position(sos.position_id, Decimal("153.10"), Decimal("50"), T1)
    campaign.fill_position(lps.position_id, Decimal("151.00"), Decimal("20"), T1)
    assert campaign.version == 6
    # 100.00 + 55.00 + 20.00
    assert campaign.total_risk == campaign.current_risk == Decimal("175.00")

    # The market rises to 156.00: (6 x 100) + (2.90 x 50) + (5 x 20) = 600 + 145 + 100 = 845.00
    campaign.mark_to_market(Decimal("156.00"), T2)
    assert (campaign.unrealized_pnl, campaign.version) == (Decimal("845.00"), 7)

    # Half the Spring is sold at 156.00: (156 - 150) x 50 = 300.00 realized, 545.00 still unrealized.
    campaign.partially_close_position(spring.position_id, Decimal("50"), Decimal("156.00"), T2)
    assert (campaign.realized_pnl, campaign.unrealized_pnl, campaign.total_pnl) == (300, 545, 845)
    assert campaign.version == 8

    # The rest goes at 157.00: Spring (7 x 50) = 350.00, SOS (3.90 x 50) = 195.00, LPS (6 x 20) = 120.00.
    campaign.close_position(spring.position_id, Decimal("157.00"), T3)
    campaign.close_position(sos.position_id, Decimal("157.00"), T3)
    assert campaign.status == MARKUP
    campaign.close_position(lps.position_id, Decimal("157.00"), T3)

    # 300 + 350 + 195 + 120 = 965.00, all of it realized; nothing held, nothing at risk.
    assert (campaign.status, campaign.completed_at, campaign.version) == (COMPLETED, T3, 11)
    assert campaign.realized_pnl == campaign.total_pnl == Decimal("965.00")
    assert (campaign.unrealized_pnl, campaign.current_risk, campaign.total_shares) == (0, 0, 0)
    assert campaign.weighted_avg_entry is None
    # The risk taken at entry is kept.
    assert campaign.total_risk == Decimal("175.00")
    assert recompute_totals(campaign) == {}
    events = campaign.collect_events()
    assert isinstance(events[-2], CampaignCompleted)
    assert floats_in(campaign) == []
    assert floats_in(events) == []
    for name in ("realized_pnl", "unrealized_pnl", "total_pnl", "current_risk", "total_risk"):
        assert type(getattr(campaign, name)) is Decimal, name
    assert all(type(p.realized_pnl) is Decimal for p in campaign.positions)
    assert all(p.pattern_type in PatternType for p in campaign.positions)
