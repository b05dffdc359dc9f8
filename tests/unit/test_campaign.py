"""The rules of a campaign, on the pure domain model: no database, no broker, no mocks.

Signals are built with `campaign_manager.examples` and turned into `EntrySignal`s by the wire contract, the way the
service does it. Unless a test says otherwise the portfolio is worth 100,000.00, so 1,000 dollars at risk is 1%.
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
    Campaign,
    CampaignPosition,
    CampaignStatus,
    EntrySignal,
    PatternType,
    PositionStatus,
    WyckoffPhase,
    allocation_percent,
    check_trade_risk,
    human_campaign_id,
)
from campaign_manager.domain.errors import InvalidStatusTransition, RuleViolation
from campaign_manager.domain.events import (
    AllocationNearLimit,
    CampaignCreated,
    CampaignStatusChanged,
    PositionAdded,
)
from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range

RANGE_START = datetime(2024, 10, 15, 13, 30, tzinfo=UTC)
OPENED_AT = datetime(2024, 10, 16, 14, 0, tzinfo=UTC)
LATER = OPENED_AT + timedelta(days=1)


# --- builders --------------------------------------------------------------------------------------------------


def new_range(phase: str = "C") -> dict[str, Any]:
    return trading_range(range_id=uuid4(), start_time=RANGE_START, phase=phase)


def range_of(campaign: Campaign) -> dict[str, Any]:
    """The trading range a campaign was opened in, as later signals of that range carry it."""
    return trading_range(range_id=campaign.trading_range_id, start_time=RANGE_START)


def entry_signal(range_: dict[str, Any], **overrides: Any) -> EntrySignal:
    """A well-formed signal of that range, as the consumer hands it to the domain."""
    return TradeSignalMessage.model_validate(trade_signal(range_, signal_id=uuid4(), **overrides)).to_entry_signal(None)


def risking(range_: dict[str, Any], percent: str, pattern_type: str = "LPS", phase: str = "D") -> EntrySignal:
    """A signal putting `percent`% of 100,000 at risk: 1 dollar per share (150 - 149) x 1,000 shares per percent."""
    shares = Decimal(percent) * 1000
    return entry_signal(
        range_,
        pattern_type=pattern_type,
        phase=phase,
        entry_price="150.00",
        stop_loss="149.00",
        position_size=str(shares),
    )


def open_campaign(signal: EntrySignal) -> Campaign:
    campaign_id = human_campaign_id(signal.symbol, signal.trading_range.start_time, taken=())
    return Campaign.open(signal, campaign_id, OPENED_AT)


def campaign_with_allocations(*percents: str) -> Campaign:
    """A campaign opened by a Spring risking the first percentage, joined by LPSs risking the others; events
    already collected."""
    range_ = new_range()
    first, *others = percents
    campaign = open_campaign(risking(range_, first, pattern_type="SPRING", phase="C"))
    for percent in others:
        campaign.add_position(risking(range_, percent), LATER)
    campaign.collect_events()
    return campaign


def campaign_in(status: CampaignStatus) -> Campaign:
    """An AAPL campaign opened by a Spring and moved, if need be, to `status`; events already collected."""
    campaign = open_campaign(entry_signal(new_range()))
    if status != CampaignStatus.ACTIVE:
        campaign.change_status(status, OPENED_AT, reason="setup")
    campaign.collect_events()
    return campaign


# --- the human campaign id -------------------------------------------------------------------------------------


def test_human_id_is_symbol_and_range_start_date() -> None:
    assert human_campaign_id("AAPL", RANGE_START, taken=set()) == "AAPL-2024-10-15"


def test_human_id_gets_suffix_two_when_the_plain_id_is_taken() -> None:
    assert human_campaign_id("AAPL", RANGE_START, taken={"AAPL-2024-10-15"}) == "AAPL-2024-10-15-2"


def test_human_id_gets_suffix_three_when_plain_and_two_are_taken() -> None:
    taken = {"AAPL-2024-10-15", "AAPL-2024-10-15-2"}
    assert human_campaign_id("AAPL", RANGE_START, taken=taken) == "AAPL-2024-10-15-3"


def test_human_id_ignores_ids_of_other_symbols_and_dates() -> None:
    taken = {"MSFT-2024-10-15", "AAPL-2024-10-14"}
    assert human_campaign_id("AAPL", RANGE_START, taken=taken) == "AAPL-2024-10-15"


def test_first_spring_opens_an_active_campaign_named_after_its_range() -> None:
    range_ = new_range()
    spring = entry_signal(range_)

    campaign = open_campaign(spring)

    assert campaign.campaign_id == "AAPL-2024-10-15"
    assert campaign.symbol == "AAPL"
    assert campaign.timeframe == "1d"
    assert str(campaign.trading_range_id) == range_["id"]
    assert campaign.status == CampaignStatus.ACTIVE
    assert campaign.phase == WyckoffPhase.C
    assert campaign.start_date == spring.generated_at
    assert campaign.version == 1
    assert [p.signal_id for p in campaign.positions] == [spring.id]
    assert campaign.is_open


# --- allocation and per-trade risk -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("risk", "portfolio", "expected"),
    [
        # 2,000 / 100,000 x 100 = 2 -> 2.0000
        ("2000.00", "100000.00", "2.0000"),
        # 1,500 / 100,000 x 100 = 1.5 -> 1.5000
        ("1500.00", "100000.00", "1.5000"),
        # 1,000 / 30,000 x 100 = 3.33333... -> 3.3333
        ("1000.00", "30000.00", "3.3333"),
        # 1,234.56 / 100,000 x 100 = 1.23456 -> 1.2346 (the fifth place, 6, rounds up)
        ("1234.56", "100000.00", "1.2346"),
        # 123.45 / 100,000 x 100 = 0.12345 -> 0.1234 (a tie rounds to the even digit)
        ("123.45", "100000.00", "0.1234"),
        # 123.55 / 100,000 x 100 = 0.12355 -> 0.1236 (a tie rounds to the even digit)
        ("123.55", "100000.00", "0.1236"),
    ],
)
def test_allocation_is_risk_over_portfolio_in_percent_to_four_places(risk: str, portfolio: str, expected: str) -> None:
    result = allocation_percent(Decimal(risk), Decimal(portfolio))

    assert type(result) is Decimal
    # Compare the text too: four decimal places, not merely an equal value.
    assert str(result) == expected


def test_trade_risking_exactly_two_percent_is_allowed() -> None:
    # (148.50 - 146.50) x 1,000 = 2,000.00 = 2% of 100,000.00
    signal = entry_signal(new_range(), entry_price="148.50", stop_loss="146.50", position_size="1000")

    assert check_trade_risk(signal) == Decimal("100000.00")
    assert open_campaign(signal).total_allocation == Decimal("2.0000")


def test_trade_risking_a_cent_over_two_percent_is_rejected() -> None:
    # 2,000.00 of 99,999.99 is 2.00000002%: just over the limit
    signal = entry_signal(new_range(), entry_price="148.50", stop_loss="146.50", portfolio_value="99999.99")

    with pytest.raises(RuleViolation, match="Trade risk exceeds 2% of portfolio"):
        open_campaign(signal)


def test_trade_risking_more_than_two_percent_cannot_join_a_campaign() -> None:
    range_ = new_range()
    campaign = open_campaign(risking(range_, "1", pattern_type="SPRING", phase="C"))
    campaign.collect_events()

    # (150 - 149) x 2,100 = 2,100 = 2.1% of 100,000
    with pytest.raises(RuleViolation, match="Trade risk exceeds 2% of portfolio") as raised:
        campaign.add_position(risking(range_, "2.1"), LATER)

    assert raised.value.reason == "Trade risk exceeds 2% of portfolio"
    assert len(campaign.positions) == 1
    assert campaign.version == 1
    assert campaign.events == []


def test_signal_without_portfolio_value_is_rejected_when_no_default_is_configured() -> None:
    signal = entry_signal(new_range(), portfolio_value=None)

    with pytest.raises(RuleViolation, match="Portfolio value unknown"):
        open_campaign(signal)


def test_signal_without_portfolio_value_cannot_join_a_campaign_either() -> None:
    range_ = new_range()
    campaign = open_campaign(entry_signal(range_))

    with pytest.raises(RuleViolation, match="Portfolio value unknown"):
        campaign.add_position(entry_signal(range_, pattern_type="SOS", phase="D", portfolio_value=None), LATER)

    assert len(campaign.positions) == 1


def test_spring_of_two_percent_and_sos_of_one_and_a_half_make_three_and_a_half() -> None:
    range_ = new_range()
    # Spring: (148.50 - 146.50) x 1,000 = 2,000 = 2% of 100,000
    campaign = open_campaign(entry_signal(range_, entry_price="148.50", stop_loss="146.50", position_size="1000"))

    # SOS: (150.25 - 148.75) x 1,000 = 1,500 = 1.5% of 100,000
    campaign.add_position(
        entry_signal(
            range_, pattern_type="SOS", phase="D", entry_price="150.25", stop_loss="148.75", position_size="1000"
        ),
        LATER,
    )

    # 2.0000 + 1.5000 = 3.5000; 2,000 + 1,500 = 3,500 dollars at risk
    assert len(campaign.positions) == 2
    assert [p.allocation_percent for p in campaign.positions] == [Decimal("2.0000"), Decimal("1.5000")]
    assert campaign.total_allocation == Decimal("3.5")
    assert campaign.total_risk == Decimal("3500.00")
    assert campaign.current_risk == Decimal("3500.00")
    assert campaign.total_shares == Decimal("2000")


def test_campaign_at_three_percent_has_no_room_for_two_and_a_half_more() -> None:
    # 2% + 1% = 3%; 3% + 2.5% = 5.5% > 5%
    campaign = campaign_with_allocations("2", "1")
    assert campaign.total_allocation == Decimal("3")

    assert not campaign.can_add_position(Decimal("2.5"))
    # A 2.5% trade is refused before the campaign is even considered: it breaks the 2% per-trade limit.
    with pytest.raises(RuleViolation, match="Trade risk exceeds 2% of portfolio"):
        campaign.add_position(risking(range_of(campaign), "2.5"), LATER)
    assert campaign.total_allocation == Decimal("3")


def test_signal_lifting_the_campaign_over_five_percent_is_rejected() -> None:
    # 2% + 1.5% = 3.5%; 3.5% + 2% = 5.5% > 5%
    campaign = campaign_with_allocations("2", "1.5")

    with pytest.raises(RuleViolation, match=r"Campaign allocation exceeded \(5% max\)") as raised:
        campaign.add_position(risking(range_of(campaign), "2"), LATER)

    # The rejected signal leaves the campaign as it was.
    assert raised.value.reason == "Campaign allocation exceeded (5% max)"
    assert len(campaign.positions) == 2
    assert campaign.total_allocation == Decimal("3.5")
    assert campaign.total_risk == Decimal("3500.00")
    assert campaign.version == 2
    assert campaign.events == []


def test_campaign_may_reach_exactly_five_percent() -> None:
    # 2% + 2% + 1% = 5.0000, which is the budget, not over it
    campaign = campaign_with_allocations("2", "2", "1")

    assert campaign.total_allocation == Decimal("5.00")
    assert len(campaign.positions) == 3


def test_campaign_at_five_percent_refuses_even_the_smallest_position() -> None:
    campaign = campaign_with_allocations("2", "2", "1")
    assert not campaign.can_add_position(Decimal("0.0001"))

    # (150 - 149) x 1 = 1 dollar = 0.0010% of 100,000; 5.0000 + 0.0010 > 5
    with pytest.raises(RuleViolation, match=r"Campaign allocation exceeded \(5% max\)"):
        campaign.add_position(
            entry_signal(range_of(campaign), entry_price="150.00", stop_loss="149.00", position_size="1"), LATER
        )


def test_can_add_position_allows_up_to_the_budget_and_no_further() -> None:
    campaign = campaign_with_allocations("2", "1")

    # 3 + 2 = 5: allowed; 3 + 2.0001 = 5.0001: not
    assert campaign.can_add_position(Decimal("2"))
    assert not campaign.can_add_position(Decimal("2.0001"))


# --- the story's figures ---------------------------------------------------------------------------------------


def test_weighted_average_entry_of_100_at_150_and_50_at_153_is_151() -> None:
    range_ = new_range()
    # Position 1: 100 shares at 150.00, risk (150 - 149) x 100 = 100 = 0.1% of 100,000
    campaign = open_campaign(entry_signal(range_, entry_price="150.00", stop_loss="149.00", position_size="100"))
    assert campaign.weighted_avg_entry == Decimal("150")

    # Position 2: 50 shares at 153.00, risk (153 - 152) x 50 = 50 = 0.05% of 100,000
    campaign.add_position(
        entry_signal(
            range_, pattern_type="SOS", phase="D", entry_price="153.00", stop_loss="152.00", position_size="50"
        ),
        LATER,
    )

    # (100 x 150 + 50 x 153) / 150 = (15,000 + 7,650) / 150 = 22,650 / 150 = 151.00
    # (The story's example says 151.50; its own figures give 151.00. 151.50 needs equal sizes: see the next test.)
    assert campaign.weighted_avg_entry == Decimal("151.00")
    assert campaign.total_shares == Decimal("150")
    # 0.1000 + 0.0500 = 0.1500
    assert campaign.total_allocation == Decimal("0.15")


def test_weighted_average_entry_of_50_at_150_and_50_at_153_is_151_50() -> None:
    range_ = new_range()
    # 50 shares at 150.00 (risk 50 = 0.05%), then 50 shares at 153.00 (risk 50 = 0.05%)
    campaign = open_campaign(entry_signal(range_, entry_price="150.00", stop_loss="149.00", position_size="50"))
    campaign.add_position(
        entry_signal(
            range_, pattern_type="SOS", phase="D", entry_price="153.00", stop_loss="152.00", position_size="50"
        ),
        LATER,
    )

    # (50 x 150 + 50 x 153) / 100 = (7,500 + 7,650) / 100 = 15,150 / 100 = 151.50
    assert campaign.weighted_avg_entry == Decimal("151.50")


def test_weighted_average_entry_is_rounded_to_eight_places() -> None:
    range_ = new_range()
    # 1 share at 150.00, then 2 shares at 151.00 (risks of 1 and 2 dollars)
    campaign = open_campaign(entry_signal(range_, entry_price="150.00", stop_loss="149.00", position_size="1"))
    campaign.add_position(
        entry_signal(
            range_, pattern_type="SOS", phase="D", entry_price="151.00", stop_loss="150.00", position_size="2"
        ),
        LATER,
    )

    # (150 + 2 x 151) / 3 = 452 / 3 = 150.666666... -> 150.66666667
    assert str(campaign.weighted_avg_entry) == "150.66666667"


def test_total_pnl_sums_the_pnl_of_every_position() -> None:
    range_ = new_range()
    campaign = open_campaign(entry_signal(range_, entry_price="150.00", stop_loss="149.00", position_size="100"))
    campaign.add_position(
        entry_signal(
            range_, pattern_type="SOS", phase="D", entry_price="153.00", stop_loss="152.00", position_size="50"
        ),
        LATER,
    )
    first, second = campaign.positions
    # A new position is worth its entry price and has made nothing yet.
    assert first.current_price == first.entry_price
    assert first.current_pnl == Decimal("0.00")

    # The market moves: (155 - 150) x 100 = 500; (154 - 153) x 50 = 50
    first.current_price = Decimal("155.00")
    first.current_pnl = (first.current_price - first.entry_price) * first.shares
    second.current_price = Decimal("154.00")
    second.current_pnl = (second.current_price - second.entry_price) * second.shares

    # 500 + 50 = 550
    assert first.current_pnl == Decimal("500")
    assert second.current_pnl == Decimal("50")
    assert campaign.calculate_total_pnl() == Decimal("550.00")
    assert type(campaign.calculate_total_pnl()) is Decimal


def test_total_pnl_of_a_campaign_without_positions_is_a_decimal_zero() -> None:
    campaign = campaign_in(CampaignStatus.ACTIVE)
    campaign.positions.clear()

    total = campaign.calculate_total_pnl()

    assert total == 0
    assert type(total) is Decimal


# --- how signals move the lifecycle ----------------------------------------------------------------------------


def test_sos_joining_an_active_campaign_moves_it_to_markup() -> None:
    range_ = new_range()
    # A Spring opens the campaign: one CampaignCreated, version 1.
    campaign = open_campaign(entry_signal(range_))
    (created,) = campaign.collect_events()
    assert isinstance(created, CampaignCreated)
    assert created.campaign_id == campaign.id
    assert created.position is campaign.positions[0]
    assert campaign.version == 1

    # An SOS of the same range joins it.
    sos = entry_signal(range_, pattern_type="SOS", phase="D", entry_price="150.25", stop_loss="148.75")
    position = campaign.add_position(sos, LATER)

    # The position is added first, then the status changes; one signal is one version step.
    added, changed = campaign.collect_events()
    assert added == PositionAdded(campaign.id, position)
    assert changed == CampaignStatusChanged(campaign.id, CampaignStatus.ACTIVE, CampaignStatus.MARKUP, "SOS entry")
    assert campaign.status == CampaignStatus.MARKUP
    assert campaign.version == 2
    assert campaign.updated_at == LATER
    assert campaign.completed_at is None
    assert campaign.positions[-1] is position
    assert position.signal_id == sos.id
    assert position.pattern_type == PatternType.SOS


def test_campaign_opened_by_an_sos_starts_in_markup_with_only_a_created_event() -> None:
    campaign = open_campaign(entry_signal(new_range(), pattern_type="SOS", phase="D"))

    assert campaign.status == CampaignStatus.MARKUP
    assert [type(event) for event in campaign.collect_events()] == [CampaignCreated]
    assert campaign.version == 1


def test_lps_joining_a_markup_campaign_leaves_it_in_markup() -> None:
    range_ = new_range()
    campaign = open_campaign(entry_signal(range_, pattern_type="SOS", phase="D"))
    campaign.collect_events()

    campaign.add_position(entry_signal(range_, pattern_type="LPS", phase="D"), LATER)

    assert campaign.status == CampaignStatus.MARKUP
    assert [type(event) for event in campaign.collect_events()] == [PositionAdded]
    assert campaign.version == 2


def test_lps_joining_an_active_campaign_leaves_it_active() -> None:
    range_ = new_range()
    campaign = open_campaign(entry_signal(range_))
    campaign.collect_events()

    campaign.add_position(entry_signal(range_, pattern_type="LPS", phase="D"), LATER)

    assert campaign.status == CampaignStatus.ACTIVE
    assert [type(event) for event in campaign.collect_events()] == [PositionAdded]


def test_phase_only_moves_forward() -> None:
    range_ = new_range(phase="C")
    # The Spring of a phase-C range opens the campaign in phase C.
    campaign = open_campaign(entry_signal(range_, phase="C"))
    assert campaign.phase == WyckoffPhase.C

    # An SOS in phase D moves it to D.
    campaign.add_position(entry_signal(range_, pattern_type="SOS", phase="D"), LATER)
    assert campaign.phase == WyckoffPhase.D

    # A later signal still tagged phase C does not move it back.
    campaign.add_position(entry_signal(range_, pattern_type="LPS", phase="C", position_size="100"), LATER)
    assert campaign.phase == WyckoffPhase.D


def test_campaign_opens_in_the_later_of_the_signal_phase_and_the_range_phase() -> None:
    # The range is already in phase D; a signal tagged C cannot pull the campaign back.
    campaign = open_campaign(entry_signal(new_range(phase="D"), phase="C"))

    assert campaign.phase == WyckoffPhase.D


def test_spring_sos_lps_of_the_story_fill_exactly_the_five_percent_budget() -> None:
    spring, sos, lps = (TradeSignalMessage.model_validate(s).to_entry_signal(None) for s in aapl_campaign_signals())

    # Spring 148.50/146.50 x 1,000 = 2,000 = 2%: opens an ACTIVE campaign
    campaign = open_campaign(spring)
    assert (campaign.status, campaign.total_allocation) == (CampaignStatus.ACTIVE, Decimal("2"))
    campaign.collect_events()

    # SOS 150.25/148.75 x 1,000 = 1,500 = 1.5%: joins, 3.5%, MARKUP
    campaign.add_position(sos, LATER)
    assert (campaign.status, campaign.total_allocation) == (CampaignStatus.MARKUP, Decimal("3.5"))
    campaign.collect_events()

    # LPS 151.00/149.50 x 1,000 = 1,500 = 1.5%: joins, 5.0% exactly, still MARKUP, passes the 4.5% warning
    campaign.add_position(lps, LATER)
    assert (campaign.status, campaign.total_allocation) == (CampaignStatus.MARKUP, Decimal("5"))
    assert [type(event) for event in campaign.collect_events()] == [PositionAdded, AllocationNearLimit]

    # One campaign, three positions, one version step per signal: 1 + 2 = 3
    assert [p.pattern_type for p in campaign.positions] == [PatternType.SPRING, PatternType.SOS, PatternType.LPS]
    assert campaign.version == 3
    # (148.50 + 150.25 + 151.00) x 1,000 / 3,000 = 449.75 / 3 = 149.91666666... -> 149.91666667
    assert campaign.weighted_avg_entry == Decimal("149.91666667")
    # 2,000 + 1,500 + 1,500 = 5,000
    assert campaign.total_risk == Decimal("5000.00")


# --- the status table ------------------------------------------------------------------------------------------

ALLOWED = {
    (CampaignStatus.ACTIVE, CampaignStatus.MARKUP),
    (CampaignStatus.ACTIVE, CampaignStatus.COMPLETED),
    (CampaignStatus.ACTIVE, CampaignStatus.INVALIDATED),
    (CampaignStatus.MARKUP, CampaignStatus.COMPLETED),
    (CampaignStatus.MARKUP, CampaignStatus.INVALIDATED),
}
ALL_PAIRS = [(from_status, to_status) for from_status in CampaignStatus for to_status in CampaignStatus]


def test_the_table_in_the_code_is_the_table_of_the_story() -> None:
    in_code = {
        (from_status, to_status) for from_status, targets in ALLOWED_TRANSITIONS.items() for to_status in targets
    }

    assert in_code == ALLOWED
    assert len(ALL_PAIRS) == 16


@pytest.mark.parametrize(("from_status", "to_status"), sorted(ALLOWED))
def test_allowed_transition_changes_status_and_takes_one_version_step(
    from_status: CampaignStatus, to_status: CampaignStatus
) -> None:
    campaign = campaign_in(from_status)
    version = campaign.version

    campaign.change_status(to_status, LATER, reason="exit")

    assert campaign.status == to_status
    assert campaign.version == version + 1
    assert campaign.updated_at == LATER
    assert campaign.collect_events() == [CampaignStatusChanged(campaign.id, from_status, to_status, "exit")]


@pytest.mark.parametrize(("from_status", "to_status"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_forbidden_transition_raises_and_names_both_statuses(
    from_status: CampaignStatus, to_status: CampaignStatus
) -> None:
    campaign = campaign_in(from_status)
    before = copy.deepcopy(campaign)

    with pytest.raises(InvalidStatusTransition) as raised:
        campaign.change_status(to_status, LATER)

    assert raised.value.from_status == from_status
    assert raised.value.to_status == to_status
    assert str(raised.value) == f"Invalid status transition: {from_status.value} -> {to_status.value}"
    # Nothing moved: same status, version, timestamps; no event.
    assert campaign == before
    assert campaign.events == []


@pytest.mark.parametrize("from_status", [CampaignStatus.ACTIVE, CampaignStatus.MARKUP])
@pytest.mark.parametrize("to_status", [CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED])
def test_ending_a_campaign_sets_completed_at(from_status: CampaignStatus, to_status: CampaignStatus) -> None:
    campaign = campaign_in(from_status)
    assert campaign.completed_at is None

    campaign.change_status(to_status, LATER)

    assert campaign.completed_at == LATER
    assert not campaign.is_open


def test_moving_to_markup_leaves_completed_at_unset() -> None:
    campaign = campaign_in(CampaignStatus.ACTIVE)

    campaign.change_status(CampaignStatus.MARKUP, LATER)

    assert campaign.completed_at is None
    assert campaign.is_open


def test_invalidated_campaign_keeps_the_reason() -> None:
    campaign = campaign_in(CampaignStatus.ACTIVE)

    campaign.change_status(CampaignStatus.INVALIDATED, LATER, reason="Spring low break")

    assert campaign.status == CampaignStatus.INVALIDATED
    assert campaign.invalidation_reason == "Spring low break"
    assert campaign.completed_at == LATER
    (event,) = campaign.collect_events()
    assert event.reason == "Spring low break"


def test_completed_campaign_has_no_invalidation_reason() -> None:
    campaign = campaign_in(CampaignStatus.MARKUP)

    campaign.change_status(CampaignStatus.COMPLETED, LATER, reason="all positions closed")

    assert campaign.invalidation_reason is None


def test_campaign_is_open_while_active_or_in_markup_only() -> None:
    # ACTIVE and MARKUP are open; COMPLETED and INVALIDATED are not.
    assert {status: campaign_in(status).is_open for status in CampaignStatus} == {
        CampaignStatus.ACTIVE: True,
        CampaignStatus.MARKUP: True,
        CampaignStatus.COMPLETED: False,
        CampaignStatus.INVALIDATED: False,
    }


@pytest.mark.parametrize("status", [CampaignStatus.COMPLETED, CampaignStatus.INVALIDATED])
def test_ended_campaign_refuses_new_positions(status: CampaignStatus) -> None:
    campaign = campaign_in(status)
    version = campaign.version

    # It says it has no room, however small the position...
    assert not campaign.can_add_position(Decimal("0.0001"))
    # ...and refuses one that is offered anyway.
    with pytest.raises(RuleViolation, match=f"is {status.value} and takes no new positions"):
        campaign.add_position(risking(range_of(campaign), "0.1"), LATER)
    assert len(campaign.positions) == 1
    assert campaign.version == version


# --- the 4.5% warning ------------------------------------------------------------------------------------------


def test_allocation_warning_is_recorded_when_the_total_passes_four_and_a_half() -> None:
    # 2 + 2 = 4
    campaign = campaign_with_allocations("2", "2")

    # 4 + 0.6 = 4.6 > 4.5
    campaign.add_position(risking(range_of(campaign), "0.6"), LATER)

    assert campaign.collect_events()[-1] == AllocationNearLimit(campaign.id, Decimal("4.6"))


def test_allocation_warning_is_not_recorded_at_exactly_four_and_a_half() -> None:
    # 2 + 2 = 4
    campaign = campaign_with_allocations("2", "2")

    # 4 + 0.5 = 4.5: at the threshold, not past it
    campaign.add_position(risking(range_of(campaign), "0.5"), LATER)

    assert campaign.total_allocation == Decimal("4.5")
    assert not any(isinstance(event, AllocationNearLimit) for event in campaign.collect_events())


def test_allocation_warning_is_recorded_when_leaving_exactly_four_and_a_half() -> None:
    # 2 + 2 + 0.5 = 4.5
    campaign = campaign_with_allocations("2", "2", "0.5")

    # 4.5 + 0.1 = 4.6 > 4.5
    campaign.add_position(risking(range_of(campaign), "0.1"), LATER)

    assert campaign.collect_events()[-1] == AllocationNearLimit(campaign.id, Decimal("4.6"))


def test_allocation_warning_is_not_repeated_once_the_total_is_above_four_and_a_half() -> None:
    # 2 + 2 + 0.6 = 4.6: the warning was recorded then (and collected)
    campaign = campaign_with_allocations("2", "2", "0.6")

    # 4.6 + 0.2 = 4.8: already above, no new warning
    campaign.add_position(risking(range_of(campaign), "0.2"), LATER)

    assert [type(event) for event in campaign.collect_events()] == [PositionAdded]


def test_allocation_warning_is_not_recorded_below_four_and_a_half() -> None:
    # 2 + 2 = 4, then 4 + 0.4 = 4.4
    campaign = campaign_with_allocations("2", "2")

    campaign.add_position(risking(range_of(campaign), "0.4"), LATER)

    assert [type(event) for event in campaign.collect_events()] == [PositionAdded]


def test_sos_passing_four_and_a_half_records_position_status_change_and_warning_in_that_order() -> None:
    range_ = new_range()
    # Spring 2 + LPS 2 = 4, still ACTIVE
    campaign = open_campaign(risking(range_, "2", pattern_type="SPRING", phase="C"))
    campaign.add_position(risking(range_, "2", pattern_type="LPS"), LATER)
    campaign.collect_events()

    # SOS 1: 4 + 1 = 5
    campaign.add_position(risking(range_, "1", pattern_type="SOS"), LATER)

    assert [type(event) for event in campaign.collect_events()] == [
        PositionAdded,
        CampaignStatusChanged,
        AllocationNearLimit,
    ]
    assert campaign.version == 3


# --- money is Decimal ------------------------------------------------------------------------------------------

CAMPAIGN_MONEY = ("total_risk", "total_allocation", "current_risk", "weighted_avg_entry", "total_shares", "total_pnl")
POSITION_MONEY = (
    "entry_price",
    "shares",
    "stop_loss",
    "target_price",
    "current_price",
    "current_pnl",
    "allocation_percent",
    "risk_amount",
)


def floats_in(value: object, path: str = "value") -> list[str]:
    """Paths of every float reachable from dataclasses, lists and tuples."""
    if isinstance(value, float):
        return [path]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            found for f in dataclasses.fields(value) for found in floats_in(getattr(value, f.name), f"{path}.{f.name}")
        ]
    if isinstance(value, list | tuple):
        return [found for i, item in enumerate(value) for found in floats_in(item, f"{path}[{i}]")]
    return []


def test_every_figure_of_campaign_and_positions_is_a_decimal() -> None:
    range_ = new_range()
    campaign = open_campaign(entry_signal(range_))
    campaign.add_position(
        entry_signal(range_, pattern_type="SOS", phase="D", entry_price="150.25", stop_loss="148.75"), LATER
    )

    for name in CAMPAIGN_MONEY:
        assert type(getattr(campaign, name)) is Decimal, name
    for position in campaign.positions:
        assert isinstance(position, CampaignPosition)
        assert position.status == PositionStatus.OPEN
        for name in POSITION_MONEY:
            assert type(getattr(position, name)) is Decimal, name


def test_no_float_anywhere_in_a_campaign_or_its_events() -> None:
    range_ = new_range()
    # Spring, SOS and LPS filling the budget, so that every kind of event is recorded.
    campaign = open_campaign(risking(range_, "2", pattern_type="SPRING", phase="C"))
    campaign.add_position(risking(range_, "2", pattern_type="SOS"), LATER)
    campaign.add_position(risking(range_, "1"), LATER)
    events = campaign.collect_events()
    campaign.change_status(CampaignStatus.INVALIDATED, LATER, reason="Spring low break")
    events += campaign.collect_events()

    assert {type(event) for event in events} == {
        CampaignCreated,
        PositionAdded,
        CampaignStatusChanged,
        AllocationNearLimit,
    }
    assert floats_in(campaign, "campaign") == []
    assert floats_in(events, "events") == []
    assert type(next(e for e in events if isinstance(e, AllocationNearLimit)).total_allocation) is Decimal


def test_totals_of_a_fresh_campaign_are_decimals_at_storage_precision() -> None:
    campaign = open_campaign(entry_signal(new_range()))

    # allocation to 4 places, P&L to cents
    assert str(campaign.total_allocation) == "2.0000"
    assert str(campaign.total_pnl) == "0.00"
    assert str(campaign.positions[0].current_pnl) == "0.00"
