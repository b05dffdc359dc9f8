"""Position events applied to a real PostgreSQL: fills and exits move positions and campaigns one version at a time,
end campaigns, are kept as history, and are refused (never crashed on) when the campaign cannot take them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select

from campaign_manager.contracts import CampaignEventMessage
from campaign_manager.examples import position_event
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaign_positions, campaigns, outbox, position_history
from campaign_manager.persistence.tables import processed_messages as processed_messages_table
from tests.factories import PositionFeed, open_aapl_campaign

pytestmark = [pytest.mark.integration, pytest.mark.database]


async def campaign_row(database: Database, campaign_id: UUID) -> dict[str, Any]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(campaigns).where(campaigns.c.id == campaign_id))
        return dict(rows.mappings().one())


async def position_rows(database: Database, campaign_id: UUID) -> dict[str, dict[str, Any]]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(campaign_positions).where(campaign_positions.c.campaign_id == campaign_id)
        )
        return {row["pattern_type"]: dict(row) for row in rows.mappings()}


async def events_caused_by(database: Database, *causes: dict[str, Any]) -> list[dict[str, Any]]:
    """Campaign events in the outbox caused by these position events, in relay order."""
    ids = {c["event_id"] for c in causes}
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.payload).where(outbox.c.event_id.is_not(None)).order_by(outbox.c.id)
        )
        events = [json.loads(row.payload) for row in rows]
    return [e for e in events if e["causation_id"] in ids]


async def history_of(database: Database, campaign_id: UUID) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(position_history)
            .where(position_history.c.campaign_id == campaign_id)
            .order_by(position_history.c.id)
        )
        return [(r.event_type, r.price, r.shares, r.realized_pnl) for r in rows]


async def processed_messages(database: Database, topic: str) -> list[tuple[str, str, str | None]]:
    table = processed_messages_table
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(table.c.message_id, table.c.outcome, table.c.reason).where(table.c.topic == topic)
        )
        return [(str(r.message_id), r.outcome, r.reason) for r in rows]


async def test_fills_and_exits_take_the_campaign_to_completed_with_its_realized_pnl(database: Database) -> None:
    # Spring, SOS and LPS open the campaign through the signal processor: version 3, MARKUP, 5% allocated.
    aapl = await open_aapl_campaign(database)
    feed = PositionFeed(database)
    spring, sos, lps = aapl.spring, aapl.sos, aapl.lps

    # The broker fills all three, then sells the Spring in two steps and the others at once: one batch.
    events = [
        # risk (148.40 - 146.50) x 1,000 = 1,900.00 = 1.9000%
        position_event(aapl.id, spring, "FILLED", price="148.40", shares="1000"),
        # risk (150.25 - 148.75) x 1,000 = 1,500.00 = 1.5000%
        position_event(aapl.id, sos, "FILLED", price="150.25", shares="1000"),
        # risk (150.90 - 149.50) x 1,000 = 1,400.00 = 1.4000%; 1.9 + 1.5 + 1.4 = 4.8%
        position_event(aapl.id, lps, "FILLED", price="150.90", shares="1000"),
        # (152.40 - 148.40) x 400 = 4.00 x 400 = 1,600.00; 600 Spring shares left
        position_event(aapl.id, spring, "PARTIALLY_CLOSED", price="152.40", shares="400"),
        # (153.00 - 148.40) x 600 = 4.60 x 600 = 2,760.00
        position_event(aapl.id, spring, "CLOSED", price="153.00"),
        # (154.25 - 150.25) x 1,000 = 4.00 x 1,000 = 4,000.00
        position_event(aapl.id, sos, "CLOSED", price="154.25"),
        # (153.90 - 150.90) x 1,000 = 3.00 x 1,000 = 3,000.00; the last position: the campaign is COMPLETED
        position_event(aapl.id, lps, "CLOSED", price="153.90", correlation_id="exit-run-7"),
    ]
    result = await feed.apply(*events)

    assert [(o.outcome, o.kind) for o in result.outcomes] == [
        ("APPLIED", "FILLED"),
        ("APPLIED", "FILLED"),
        ("APPLIED", "FILLED"),
        ("APPLIED", "PARTIALLY_CLOSED"),
        ("APPLIED", "CLOSED"),
        ("APPLIED", "CLOSED"),
        ("APPLIED", "CLOSED"),
    ]
    # 1,600.00 + 2,760.00 + 4,000.00 + 3,000.00 = 11,360.00 realized, nothing held, nothing unrealized.
    campaign = await campaign_row(database, aapl.id)
    assert campaign["status"] == "COMPLETED"
    assert campaign["completed_at"] is not None
    assert (campaign["realized_pnl"], campaign["unrealized_pnl"]) == (Decimal("11360.00"), Decimal("0.00"))
    assert campaign["total_pnl"] == Decimal("11360.00")
    assert (campaign["total_shares"], campaign["weighted_avg_entry"]) == (0, None)
    # The risk taken at entry stays: 1,900.00 + 1,500.00 + 1,400.00 = 4,800.00; none of it is open any more.
    assert (campaign["total_risk"], campaign["current_risk"]) == (Decimal("4800.00"), 0)
    assert campaign["total_allocation"] == Decimal("4.8000")
    # One version per change: 3 after the signals, 7 position events later 10.
    assert campaign["version"] == 10
    positions = await position_rows(database, aapl.id)
    assert {p: (r["status"], r["shares"], r["entry_shares"]) for p, r in positions.items()} == {
        "SPRING": ("CLOSED", 0, 1000),
        "SOS": ("CLOSED", 0, 1000),
        "LPS": ("CLOSED", 0, 1000),
    }
    assert positions["SPRING"]["realized_pnl"] == Decimal("4360.00")  # 1,600.00 + 2,760.00
    assert (positions["SPRING"]["entry_price"], positions["SPRING"]["exit_price"]) == (
        Decimal("148.40"),
        Decimal("153.00"),
    )

    # The events tell the story in order, one version step per position event, each caused by its event.
    published = await events_caused_by(database, *events)
    assert [(e["event_type"], e["campaign_version"]) for e in published] == [
        ("PositionFilled", 4),
        ("PositionFilled", 5),
        ("PositionFilled", 6),
        ("PositionClosed", 7),
        ("PositionClosed", 8),
        ("PositionClosed", 9),
        ("PositionClosed", 10),
        ("CampaignCompleted", 10),
        ("CampaignStatusChanged", 10),
    ]
    causes = [e["event_id"] for e in events]
    assert [e["causation_id"] for e in published] == [*causes, causes[-1], causes[-1]]
    assert published[-1]["correlation_id"] == "exit-run-7"
    for event in published:
        CampaignEventMessage.model_validate(event)
    # Each event carries the position as that change left it, not as the batch ended.
    partial_close = published[3]["details"]
    assert (partial_close["shares_closed"], partial_close["realized_pnl"]) == ("400", "1600.00")
    assert (partial_close["position"]["status"], partial_close["position"]["shares"]) == ("PARTIAL", "600")
    assert published[3]["campaign"]["total_shares"] == "2600"  # 600 + 1,000 + 1,000
    assert published[7]["details"] == {
        "reason": "All positions closed",
        "realized_pnl": "11360.00",
        "total_pnl": "11360.00",
    }
    assert published[8]["details"] == {
        "from_status": "MARKUP",
        "to_status": "COMPLETED",
        "reason": "All positions closed",
    }

    # Every fill and exit is history: shares sold (for CLOSED, all that was held) and the P&L of that exit.
    assert await history_of(database, aapl.id) == [
        ("FILLED", Decimal("148.40"), 1000, 0),
        ("FILLED", Decimal("150.25"), 1000, 0),
        ("FILLED", Decimal("150.90"), 1000, 0),
        ("PARTIALLY_CLOSED", Decimal("152.40"), 400, Decimal("1600.00")),
        ("CLOSED", Decimal("153.00"), 600, Decimal("2760.00")),
        ("CLOSED", Decimal("154.25"), 1000, Decimal("4000.00")),
        ("CLOSED", Decimal("153.90"), 1000, Decimal("3000.00")),
    ]
    assert sorted(await processed_messages(database, feed.topic)) == sorted(
        (e["event_id"], "APPLIED", None) for e in events
    )


async def test_fills_and_exits_in_separate_batches_give_the_same_campaign(database: Database) -> None:
    aapl = await open_aapl_campaign(database, "SPRING")
    feed = PositionFeed(database)

    # One event per batch: fill 1,000 at 148.50, sell 250 at 150.50, then the rest at 151.50.
    for event in [
        position_event(aapl.id, aapl.spring, "FILLED", price="148.50", shares="1000"),
        position_event(aapl.id, aapl.spring, "PARTIALLY_CLOSED", price="150.50", shares="250"),
        position_event(aapl.id, aapl.spring, "CLOSED", price="151.50"),
    ]:
        await feed.apply(event)

    # (150.50 - 148.50) x 250 = 500.00 and (151.50 - 148.50) x 750 = 2,250.00: 2,750.00
    campaign = await campaign_row(database, aapl.id)
    assert (campaign["status"], campaign["version"]) == ("COMPLETED", 4)
    assert campaign["realized_pnl"] == Decimal("2750.00")


async def test_a_stopped_spring_invalidates_the_campaign_and_later_fills_are_rejected(database: Database) -> None:
    aapl = await open_aapl_campaign(database, "SPRING", "SOS")
    feed = PositionFeed(database)
    fill = position_event(aapl.id, aapl.spring, "FILLED", price="148.50", shares="1000")
    # The Spring low breaks: all 1,000 shares go at 146.40, (146.40 - 148.50) x 1,000 = -2,100.00.
    stop = position_event(aapl.id, aapl.spring, "STOPPED", price="146.40")
    late_fill = position_event(aapl.id, aapl.sos, "FILLED", price="150.25", shares="1000")

    result = await feed.apply(fill, stop, late_fill)

    assert [o.outcome for o in result.outcomes] == ["APPLIED", "APPLIED", "REJECTED"]
    campaign = await campaign_row(database, aapl.id)
    assert (campaign["status"], campaign["invalidation_reason"]) == ("INVALIDATED", "Spring low break")
    assert campaign["realized_pnl"] == Decimal("-2100.00")
    assert campaign["version"] == 4  # 2 after the signals, then the fill and the stop
    published = await events_caused_by(database, fill, stop, late_fill)
    assert [(e["event_type"], e["campaign_version"]) for e in published] == [
        ("PositionFilled", 3),
        ("PositionClosed", 4),
        ("CampaignInvalidated", 4),
        ("CampaignStatusChanged", 4),
        ("PositionEventRejected", 4),
    ]
    assert published[1]["details"]["stop_hit"] is True
    assert published[2]["details"]["reason"] == "Spring low break"
    assert published[2]["details"]["price"] == "146.40"
    rejected = published[4]
    assert rejected["details"] == {
        "reason": f"Campaign {campaign['campaign_id']} is INVALIDATED and takes no fills",
        "event_id": late_fill["event_id"],
        "event_type": "FILLED",
        "position_id": aapl.sos,
    }
    assert rejected["campaign"]["status"] == "INVALIDATED"  # the campaign as it stands
    CampaignEventMessage.model_validate(rejected)
    assert await history_of(database, aapl.id) == [
        ("FILLED", Decimal("148.50"), 1000, 0),
        ("STOPPED", Decimal("146.40"), 1000, Decimal("-2100.00")),
    ]


async def test_a_redelivered_position_event_changes_nothing(database: Database) -> None:
    aapl = await open_aapl_campaign(database, "SPRING")
    feed = PositionFeed(database)
    fill = position_event(aapl.id, aapl.spring, "FILLED", price="148.50", shares="1000")

    # The producer sent the fill twice in a row, and once more later, each time at a new offset.
    first = await feed.apply(fill, fill)
    later = await feed.apply(fill)

    assert [o.outcome for o in first.outcomes] == ["APPLIED", "DUPLICATE"]
    assert [(o.outcome, o.reason) for o in later.outcomes] == [("DUPLICATE", "event id already processed")]
    assert (await campaign_row(database, aapl.id))["version"] == 2
    assert [e["event_type"] for e in await events_caused_by(database, fill)] == ["PositionFilled"]
    assert len(await history_of(database, aapl.id)) == 1


async def test_an_event_for_an_unknown_campaign_is_rejected_and_announced(database: Database) -> None:
    feed = PositionFeed(database)
    unknown_campaign = uuid4()
    event = position_event(unknown_campaign, uuid4(), "CLOSED", price="150.00", correlation_id="exit-run-9")

    result = await feed.apply(event)

    assert [(o.outcome, o.reason, o.campaign_id) for o in result.outcomes] == [("REJECTED", "Campaign not found", None)]
    (rejected,) = await events_caused_by(database, event)
    assert rejected["event_type"] == "PositionEventRejected"
    assert (rejected["campaign"], rejected["campaign_version"]) == (None, None)
    assert rejected["details"]["reason"] == "Campaign not found"
    assert rejected["correlation_id"] == "exit-run-9"
    CampaignEventMessage.model_validate(rejected)
    async with database.engine.connect() as connection:
        key = await connection.scalar(select(outbox.c.message_key).where(outbox.c.event_id == rejected["event_id"]))
    assert key == str(unknown_campaign).encode()  # keyed by the campaign the event names
    assert await processed_messages(database, feed.topic) == [(event["event_id"], "REJECTED", "Campaign not found")]


async def test_an_exit_whose_pnl_could_not_be_stored_is_rejected_not_failed(database: Database) -> None:
    aapl = await open_aapl_campaign(database, "SPRING")
    feed = PositionFeed(database)
    fill = position_event(aapl.id, aapl.spring, "FILLED", price="148.50", shares="1000")
    # (99,999,999 - 148.50) x 1,000 = 99,999,850,500.00: a valid price, a P&L beyond NUMERIC(12,2)
    absurd_exit = position_event(aapl.id, aapl.spring, "CLOSED", price="99999999")
    exit_ = position_event(aapl.id, aapl.spring, "CLOSED", price="150.00")

    result = await feed.apply(fill, absurd_exit, exit_)

    reason = "Realized P&L 99999850500.00 is beyond the largest amount a campaign records (±9999999999.99)"
    assert [(o.outcome, o.reason) for o in result.outcomes] == [
        ("APPLIED", None),
        ("REJECTED", reason),
        ("APPLIED", None),
    ]
    assert [e["event_type"] for e in await events_caused_by(database, absurd_exit)] == ["PositionEventRejected"]
    assert (await campaign_row(database, aapl.id))["realized_pnl"] == Decimal("1500.00")  # (150 - 148.50) x 1,000


async def test_events_the_campaign_cannot_take_are_rejected_one_by_one_and_the_rest_applied(
    database: Database,
) -> None:
    aapl = await open_aapl_campaign(database, "SPRING")
    feed = PositionFeed(database)
    unknown_position = uuid4()

    result = await feed.apply(
        position_event(aapl.id, unknown_position, "FILLED", price="148.50", shares="1000"),
        position_event(aapl.id, aapl.spring, "FILLED", price="148.50", shares="1000"),
        position_event(aapl.id, aapl.spring, "PARTIALLY_CLOSED", price="150.00", shares="1200"),
        position_event(aapl.id, aapl.spring, "FILLED", price="146.00", shares="1000"),
        position_event(aapl.id, aapl.spring, "PARTIALLY_CLOSED", price="150.00", shares="100"),
    )

    assert [(o.outcome, o.reason) for o in result.outcomes] == [
        ("REJECTED", f"Position {unknown_position} is not part of campaign {result.outcomes[1].human_campaign_id}"),
        ("APPLIED", None),
        ("REJECTED", f"Cannot close 1200 shares of position {aapl.spring}: only 1000 held"),
        ("REJECTED", f"Fill price 146.00 of position {aapl.spring} is not above its stop 146.50000000"),
        ("APPLIED", None),
    ]
    # (150.00 - 148.50) x 100 = 150.00; two changes after the signal's version 1
    campaign = await campaign_row(database, aapl.id)
    assert (campaign["version"], campaign["realized_pnl"], campaign["total_shares"]) == (3, Decimal("150.00"), 900)


async def test_a_record_that_is_not_a_position_event_is_dead_lettered_and_the_next_one_applied(
    database: Database,
) -> None:
    aapl = await open_aapl_campaign(database, "SPRING")
    feed = PositionFeed(database)
    no_shares = position_event(aapl.id, aapl.spring, "FILLED", price="148.50")

    result = await feed.apply(no_shares, position_event(aapl.id, aapl.spring, "CLOSED", price="149.00"))

    assert [d.reason for d in result.dead_letters] == ["value: Value error, shares is required for FILLED"]
    assert [o.outcome for o in result.outcomes] == ["APPLIED"]
    async with database.engine.connect() as connection:
        (letter,) = (await connection.execute(select(outbox).where(outbox.c.topic == f"{feed.topic}.dlq"))).mappings()
    assert letter["payload"] == json.dumps(no_shares).encode()
    assert letter["headers"]["x-dlq-error-type"] == "ValidationError"
