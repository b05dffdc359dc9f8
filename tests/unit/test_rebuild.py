"""Replaying a campaign from its positions' fills and exits (`campaign-manager rebuild`), with no database.

The campaigns here are the domain's own, changed by the same calls the position-events consumer makes; their
history is recorded as the consumer records it. Portfolio 100,000.00; the Spring plans 100 shares at 150.00 (stop
149.00), the SOS 50 at 153.00 (stop 152.00).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

from campaign_manager.contracts import TradeSignalMessage
from campaign_manager.domain.campaign import Campaign, CampaignStatus, PositionStatus, human_campaign_id
from campaign_manager.domain.events import PositionClosed
from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.persistence.store import PositionHistoryEntry
from campaign_manager.service.positions import apply_position_event
from campaign_manager.service.rebuild import Difference, check_campaign, replay_position

RANGE_START = datetime(2024, 10, 15, 13, 30, tzinfo=UTC)
OPENED_AT = datetime(2024, 10, 16, 14, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return OPENED_AT + timedelta(minutes=minutes)


def spring_and_sos_campaign() -> Campaign:
    range_ = trading_range(range_id=uuid4(), start_time=RANGE_START)
    spring, sos = (
        TradeSignalMessage.model_validate(
            trade_signal(range_, pattern_type=p, phase=ph, entry_price=e, stop_loss=s, position_size=n)
        ).to_entry_signal(None)
        for p, ph, e, s, n in [("SPRING", "C", "150.00", "149.00", "100"), ("SOS", "D", "153.00", "152.00", "50")]
    )
    campaign = Campaign.open(spring, human_campaign_id("AAPL", RANGE_START, ()), OPENED_AT)
    campaign.add_position(sos, OPENED_AT)
    campaign.collect_events()
    return campaign


class Journal:
    """Applies position events to a campaign as the consumer does and keeps the history it would store."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.entries: dict[UUID, list[PositionHistoryEntry]] = {}

    def apply(self, event_type: str, position: int, price: str, shares: str | None = None, minute: int = 1) -> None:
        position_id = self.campaign.positions[position].position_id
        apply_position_event(
            self.campaign,
            event_type,
            position_id,
            Decimal(price),
            Decimal(shares) if shares else None,
            now=at(minute + 1),
            occurred_at=at(minute),
        )
        closed = next((e for e in self.campaign.collect_events() if isinstance(e, PositionClosed)), None)
        self.entries.setdefault(position_id, []).append(
            PositionHistoryEntry(
                position_id=position_id,
                campaign_id=self.campaign.id,
                message_id=uuid4(),
                event_type=event_type,
                price=Decimal(price),
                shares=closed.shares_closed if closed else Decimal(shares or "0"),
                realized_pnl=closed.realized_pnl if closed else Decimal("0.00"),
                occurred_at=at(minute),
            )
        )


def test_a_campaign_replayed_from_its_fills_and_exits_arrives_at_every_stored_figure() -> None:
    journal = Journal(spring_and_sos_campaign())
    # The Spring fills 100 at 150.10 and sells 40 at 155.00, the SOS fills 50 at 153.20; a market price of 156.00
    # moves both; the Spring's last 60 go at 157.00.
    journal.apply("FILLED", 0, "150.10", "100", minute=1)
    journal.apply("PARTIALLY_CLOSED", 0, "155.00", "40", minute=2)
    journal.apply("FILLED", 1, "153.20", "50", minute=3)
    journal.campaign.mark_to_market(Decimal("156.00"), at(4))
    journal.apply("CLOSED", 0, "157.00", minute=5)

    # (155.00 - 150.10) x 40 = 196.00 and (157.00 - 150.10) x 60 = 414.00: 610.00 realized;
    # the SOS holds 50 at 153.20, worth 156.00: (156.00 - 153.20) x 50 = 140.00 unrealized.
    assert journal.campaign.realized_pnl == Decimal("610.00")
    assert journal.campaign.unrealized_pnl == Decimal("140.00")
    assert check_campaign(journal.campaign, journal.entries) == []


def test_a_position_never_filled_keeps_its_planned_entry() -> None:
    campaign = spring_and_sos_campaign()

    assert check_campaign(campaign, {}) == []


def test_exits_of_a_planned_position_are_replayed_on_its_planned_entry() -> None:
    journal = Journal(spring_and_sos_campaign())
    # No fill came for the SOS; it is sold at 154.00: (154.00 - 153.00) x 50 = 50.00.
    journal.apply("CLOSED", 1, "154.00")

    stored = journal.campaign.positions[1]
    sos = replay_position(journal.campaign, stored, journal.entries[stored.position_id])

    assert (sos.status, sos.shares, sos.realized_pnl) == (PositionStatus.CLOSED, Decimal("0"), Decimal("50.00"))
    assert check_campaign(journal.campaign, journal.entries) == []


def test_a_stopped_spring_replays_to_its_loss_in_the_invalidated_campaign() -> None:
    journal = Journal(spring_and_sos_campaign())
    journal.apply("FILLED", 0, "150.00", "100")
    # The Spring low breaks: 100 shares go at 148.90, (148.90 - 150.00) x 100 = -110.00.
    journal.apply("STOPPED", 0, "148.90", minute=2)

    assert journal.campaign.status == CampaignStatus.INVALIDATED
    assert journal.entries[journal.campaign.positions[0].position_id][-1].shares == Decimal("100")
    assert check_campaign(journal.campaign, journal.entries) == []


def test_a_drifted_campaign_total_is_reported_with_the_stored_and_the_recomputed_value() -> None:
    journal = Journal(spring_and_sos_campaign())
    journal.apply("FILLED", 0, "150.00", "100")
    journal.apply("CLOSED", 0, "152.00", minute=2)  # (152.00 - 150.00) x 100 = 200.00
    stored = copy.deepcopy(journal.campaign)
    stored.realized_pnl = Decimal("999.99")

    differences = check_campaign(stored, journal.entries)

    assert differences == [Difference(stored.campaign_id, "realized_pnl", Decimal("999.99"), Decimal("200.00"))]


def test_a_position_whose_held_shares_disagree_with_its_exits_is_reported() -> None:
    journal = Journal(spring_and_sos_campaign())
    journal.apply("FILLED", 0, "150.00", "100")
    journal.apply("PARTIALLY_CLOSED", 0, "151.00", "30", minute=2)
    stored = copy.deepcopy(journal.campaign)
    spring = stored.positions[0]
    # Someone "fixed" the row by hand: 80 shares held instead of 100 - 30 = 70, the totals left alone.
    spring.shares = Decimal("80")

    differences = check_campaign(stored, journal.entries)

    assert differences == [
        Difference(stored.campaign_id, f"positions[{spring.position_id}].shares", Decimal("80"), Decimal("70"))
    ]


def test_an_unrealized_pnl_that_does_not_match_the_last_price_is_reported() -> None:
    journal = Journal(spring_and_sos_campaign())
    journal.campaign.mark_to_market(Decimal("151.00"), at(1))
    stored = copy.deepcopy(journal.campaign)
    sos = stored.positions[1]
    # The SOS at 151.00 lost (151.00 - 153.00) x 50 = -100.00; the row says -90.00.
    sos.current_pnl = Decimal("-90.00")

    (difference, *totals) = check_campaign(stored, journal.entries)

    assert difference == Difference(
        stored.campaign_id, f"positions[{sos.position_id}].current_pnl", Decimal("-90.00"), Decimal("-100.00")
    )
    assert totals == []  # the campaign's unrealized P&L (100.00 - 100.00 = 0.00) was stored right


def test_a_history_the_domain_refuses_is_reported_not_raised() -> None:
    journal = Journal(spring_and_sos_campaign())
    journal.apply("FILLED", 0, "150.00", "100")
    spring_id = journal.campaign.positions[0].position_id
    # A history row claims 120 shares were sold of the 100 held.
    bad = PositionHistoryEntry(
        spring_id, journal.campaign.id, uuid4(), "PARTIALLY_CLOSED", Decimal("151"), Decimal("120"), Decimal("0"), at(3)
    )

    (difference,) = check_campaign(journal.campaign, {spring_id: [*journal.entries[spring_id], bad]})

    assert difference.field == f"positions[{spring_id}].history"
    assert difference.stored.startswith(f"PARTIALLY_CLOSED {bad.message_id}")
    assert difference.recomputed == f"refused: Cannot close 120 shares of position {spring_id}: only 100 held"
