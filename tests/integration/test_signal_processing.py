"""Signals applied to a real PostgreSQL through the service layer: one transaction per batch, exactly once."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from uuid import uuid4

import pytest
from sqlalchemy import func, select, text

from campaign_manager.contracts import CampaignEventMessage
from campaign_manager.domain.campaign import Campaign
from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaign_positions, campaigns, outbox, processed_signals
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]


def new_portfolio() -> str:
    return f"pf-{uuid4().hex[:12]}"


async def campaigns_of(database: Database, portfolio_id: str) -> list[dict]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(campaigns).where(campaigns.c.portfolio_id == portfolio_id).order_by(campaigns.c.created_at)
        )
        return [dict(row) for row in rows.mappings()]


async def positions_of(database: Database, campaign_id) -> list[dict]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(campaign_positions).where(campaign_positions.c.campaign_id == campaign_id)
        )
        return [dict(row) for row in rows.mappings()]


async def events_about(database: Database, signal_ids: set[str]) -> list[dict]:
    """Campaign events in the outbox caused by these signals, in relay order."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.payload, outbox.c.topic).where(outbox.c.event_id.is_not(None)).order_by(outbox.c.id)
        )
        events = [json.loads(row.payload) for row in rows]
    return [e for e in events if e["causation_id"] in signal_ids]


async def test_spring_sos_lps_are_tracked_as_one_campaign_in_markup(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    signals = aapl_campaign_signals(portfolio_id=portfolio)

    # The three signals of one range arrive in one batch.
    result = await process(processor, feed, [feed.record(s) for s in signals])
    assert [o.outcome for o in result.outcomes] == ["CREATED", "ADDED", "ADDED"]

    # One campaign holds all three positions: 2.0% + 1.5% + 1.5% = exactly the 5% budget.
    (campaign,) = await campaigns_of(database, portfolio)
    assert campaign["campaign_id"].startswith("AAPL-2024-10-15")
    assert campaign["status"] == "MARKUP"
    assert campaign["version"] == 3
    assert campaign["total_allocation"] == Decimal("5.0000")
    assert campaign["total_risk"] == Decimal("5000.00")  # 2000 + 1500 + 1500
    assert campaign["total_shares"] == Decimal("3000")
    # (148.50 + 150.25 + 151.00) x 1000 / 3000 = 149.91666667
    assert campaign["weighted_avg_entry"] == Decimal("149.91666667")
    assert len(await positions_of(database, campaign["id"])) == 3

    # The events tell the same story, in order, with contiguous versions.
    events = await events_about(database, {s["id"] for s in signals})
    assert [(e["event_type"], e["campaign_version"]) for e in events] == [
        ("CampaignCreated", 1),
        ("PositionAdded", 2),
        ("CampaignStatusChanged", 2),
        ("PositionAdded", 3),
    ]
    assert events[2]["details"] == {"from_status": "ACTIVE", "to_status": "MARKUP", "reason": "SOS entry"}
    for event in events:  # each one is what the published contract says
        CampaignEventMessage.model_validate(event)
    assert events[-1]["campaign"]["total_allocation"] == "5.0000"


async def test_signals_in_separate_batches_join_the_open_campaign(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    spring, sos, lps = aapl_campaign_signals(portfolio_id=portfolio)

    for signal in (spring, sos, lps):
        await process(processor, feed, [feed.record(signal)])

    (campaign,) = await campaigns_of(database, portfolio)
    assert campaign["status"] == "MARKUP"
    assert campaign["version"] == 3


async def test_a_redelivered_batch_changes_nothing_and_publishes_nothing(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    records = [feed.record(s) for s in aapl_campaign_signals(portfolio_id=portfolio)]
    await process(processor, feed, records)
    async with database.engine.connect() as connection:
        outbox_before = (await connection.execute(text("SELECT count(*) FROM outbox"))).scalar()

    # The same records at the same offsets come back (a rebalance, a restart before Kafka's commit).
    again = await process(processor, feed, records)

    assert again.skipped_already_applied == 3
    assert again.outcomes == []
    async with database.engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM outbox"))).scalar() == outbox_before
    (campaign,) = await campaigns_of(database, portfolio)
    assert campaign["version"] == 3


async def test_a_signal_published_twice_adds_one_position(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    spring = aapl_campaign_signals(portfolio_id=portfolio)[0]

    # The producer retried: the same signal id at a new offset, in the same batch and in a later one.
    first = await process(processor, feed, [feed.record(spring), feed.record(spring)])
    later = await process(processor, feed, [feed.record(spring)])

    assert [o.outcome for o in first.outcomes] == ["CREATED", "DUPLICATE"]
    assert [o.outcome for o in later.outcomes] == ["DUPLICATE"]
    (campaign,) = await campaigns_of(database, portfolio)
    assert len(await positions_of(database, campaign["id"])) == 1
    assert len(await events_about(database, {spring["id"]})) == 1


async def test_a_signal_risking_over_2_percent_is_rejected_recorded_and_announced(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    # (148.50 - 145.50) x 1000 = 3000 = 3% of 100,000
    risky = trade_signal(trading_range(), entry_price="148.50", stop_loss="145.50", portfolio_id=portfolio)

    result = await process(processor, feed, [feed.record(risky)])

    assert [(o.outcome, o.reason) for o in result.outcomes] == [("REJECTED", "Trade risk exceeds 2% of portfolio")]
    assert await campaigns_of(database, portfolio) == []
    async with database.engine.connect() as connection:
        row = (
            await connection.execute(select(processed_signals).where(processed_signals.c.signal_id == risky["id"]))
        ).one()
    assert row.outcome == "REJECTED"
    (event,) = await events_about(database, {risky["id"]})
    assert event["event_type"] == "SignalRejected"
    assert event["campaign"] is None
    assert event["details"]["reason"] == "Trade risk exceeds 2% of portfolio"
    assert event["details"]["signal_id"] == risky["id"]
    CampaignEventMessage.model_validate(event)


async def test_a_signal_lifting_the_campaign_over_5_percent_is_rejected(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    signals = aapl_campaign_signals(portfolio_id=portfolio)
    one_more = trade_signal(
        signals[0]["trading_range"], pattern_type="LPS", phase="D", entry_price="151.00", stop_loss="150.00",
        position_size="100", portfolio_id=portfolio,
    )  # fmt: skip

    result = await process(processor, feed, [feed.record(s) for s in [*signals, one_more]])

    assert result.outcomes[-1].reason == "Campaign allocation exceeded (5% max)"
    (campaign,) = await campaigns_of(database, portfolio)
    assert campaign["total_allocation"] == Decimal("5.0000")
    (event,) = await events_about(database, {one_more["id"]})
    assert event["event_type"] == "SignalRejected"
    assert event["campaign_version"] == 3  # the campaign as it stands, unchanged


async def test_a_signal_without_any_portfolio_value_is_rejected(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database, default_portfolio_value=None)
    signal = trade_signal(trading_range(), portfolio_value=None, portfolio_id=portfolio)

    result = await process(processor, feed, [feed.record(signal)])

    assert result.outcomes[0].outcome == "REJECTED"
    assert "Portfolio value unknown" in result.outcomes[0].reason


async def test_the_configured_portfolio_value_applies_when_the_signal_has_none(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database, default_portfolio_value=Decimal("200000"))
    signal = trade_signal(trading_range(), portfolio_value=None, portfolio_id=portfolio)  # risk 2000

    await process(processor, feed, [feed.record(signal)])

    (campaign,) = await campaigns_of(database, portfolio)
    assert campaign["total_allocation"] == Decimal("1.0000")  # 2000 / 200,000


async def test_malformed_records_are_dead_lettered_with_their_reason_and_the_partition_moves_on(
    database: Database,
) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    spring = aapl_campaign_signals(portfolio_id=portfolio)[0]

    result = await process(
        processor,
        feed,
        [feed.record(b"{not json", key=b"k1"), feed.record({"id": "nope"}), feed.record(spring)],
    )

    assert [d.error_type for d in result.dead_letters] == ["DecodeError", "ValidationError"]
    assert result.next_offsets == {0: 3}
    async with database.engine.connect() as connection:
        rows = (
            (
                await connection.execute(
                    select(outbox).where(outbox.c.topic == "trade-signals.dlq").order_by(outbox.c.id.desc()).limit(2)
                )
            )
            .mappings()
            .all()
        )
    by_offset = {r["headers"]["x-original-offset"]: r for r in rows}
    not_json = by_offset["0"]
    headers = not_json["headers"]
    assert not_json["payload"] == b"{not json"
    assert not_json["message_key"] == b"k1"
    assert headers["x-original-topic"] == feed.topic
    assert headers["x-original-partition"] == "0"
    assert headers["x-dlq-error-type"] == "DecodeError"
    assert headers["x-dlq-reason"].startswith("message value is not valid JSON")
    assert len(await campaigns_of(database, portfolio)) == 1


async def test_a_completed_campaign_is_followed_by_a_new_one_with_a_suffixed_id(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    range_ = trading_range(symbol=f"Z{uuid4().hex[:6].upper()}")
    await process(processor, feed, [feed.record(trade_signal(range_, portfolio_id=portfolio))])
    (first,) = await campaigns_of(database, portfolio)
    async with database.engine.begin() as connection:
        await connection.execute(campaigns.update().where(campaigns.c.id == first["id"]).values(status="COMPLETED"))

    # A later Spring in the same range opens a new campaign: the completed one is terminal.
    await process(processor, feed, [feed.record(trade_signal(range_, portfolio_id=portfolio))])

    first_again, second = await campaigns_of(database, portfolio)
    assert first_again["campaign_id"] == f"{range_['symbol']}-2024-10-15"
    assert second["campaign_id"] == f"{range_['symbol']}-2024-10-15-2"
    assert second["status"] == "ACTIVE"


async def test_another_timeframe_starting_the_same_day_gets_the_next_suffix(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    symbol = f"Y{uuid4().hex[:6].upper()}"
    daily, hourly = trading_range(symbol=symbol, timeframe="1d"), trading_range(symbol=symbol, timeframe="1h")

    await process(
        processor,
        feed,
        [
            feed.record(trade_signal(daily, portfolio_id=portfolio)),
            feed.record(trade_signal(hourly, portfolio_id=portfolio)),
        ],
    )

    ids = sorted(c["campaign_id"] for c in await campaigns_of(database, portfolio))
    assert ids == [f"{symbol}-2024-10-15", f"{symbol}-2024-10-15-2"]


async def test_two_portfolios_trading_one_range_have_a_campaign_each(database: Database) -> None:
    first, second = new_portfolio(), new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    range_ = trading_range()

    await process(
        processor,
        feed,
        [feed.record(trade_signal(range_, portfolio_id=first)), feed.record(trade_signal(range_, portfolio_id=second))],
    )

    assert len(await campaigns_of(database, first)) == 1
    assert len(await campaigns_of(database, second)) == 1


async def test_racing_workers_open_exactly_one_campaign_per_range(database: Database) -> None:
    portfolio = new_portfolio()
    ranges = [trading_range(symbol=f"R{i:03d}{uuid4().hex[:4].upper()}") for i in range(50)]
    # Each range's first two signals land on two partitions (a producer that did not key by range), and two
    # workers apply them at the same moment.
    # 100 signals risking 100.00 each: exactly the portfolio's 10% heat limit, so every one of them fits.
    feed_a, feed_b = SignalFeed(), SignalFeed()
    worker_a, worker_b = make_processor(database), make_processor(database)
    batch_a = [feed_a.record(trade_signal(r, portfolio_id=portfolio, position_size="50")) for r in ranges]
    batch_b = [
        feed_b.record(trade_signal(r, pattern_type="LPS", phase="D", portfolio_id=portfolio, position_size="50"))
        for r in reversed(ranges)
    ]

    await asyncio.gather(process(worker_a, feed_a, batch_a), process(worker_b, feed_b, batch_b))

    opened = await campaigns_of(database, portfolio)
    assert len(opened) == 50
    assert {str(c["trading_range_id"]) for c in opened} == {r["id"] for r in ranges}
    for campaign in opened:
        assert len(await positions_of(database, campaign["id"])) == 2
        assert campaign["version"] == 2


async def test_a_record_that_keeps_crashing_the_handler_is_dead_lettered_and_the_rest_applied(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    good_before, good_after = (trade_signal(trading_range(), portfolio_id=portfolio) for _ in range(2))
    poison = trade_signal(trading_range(symbol="POISON"), portfolio_id=portfolio)
    # A bug that only this signal triggers, every time it is applied.
    original_open = Campaign.open.__func__

    def open_or_crash(cls, signal, campaign_id, now):  # type: ignore[no-untyped-def]
        if signal.symbol == "POISON":
            raise RuntimeError("boom: unexpected state")
        return original_open(cls, signal, campaign_id, now)

    monkeypatch.setattr(Campaign, "open", classmethod(open_or_crash))

    result = await process(processor, feed, [feed.record(good_before), feed.record(poison), feed.record(good_after)])

    # The batch failed as a whole, so its records were applied one by one: the poison one went to the DLQ.
    assert [o.outcome for o in result.outcomes] == ["CREATED", "CREATED"]
    (dead,) = result.dead_letters
    assert dead.error_type == "ProcessingError"
    assert "boom: unexpected state" in dead.reason
    assert result.next_offsets == {0: 3}
    assert len(await campaigns_of(database, portfolio)) == 2


async def test_a_dead_letter_keeps_headers_postgresql_cannot_store_as_escaped_text(database: Database) -> None:
    feed, processor = SignalFeed(), make_processor(database)

    # NUL is valid UTF-8 but jsonb refuses it; \xff is not UTF-8 at all.
    result = await process(
        processor, feed, [feed.record(b"\x00not json", headers=(("trace", b"a\x00b"), ("raw", b"\xff")))]
    )

    (dead,) = result.dead_letters
    assert dead.error_type == "DecodeError"
    async with database.engine.connect() as connection:
        row = (
            (await connection.execute(select(outbox).where(outbox.c.headers["x-original-topic"].astext == feed.topic)))
            .mappings()
            .one()
        )
    assert row["payload"] == b"\x00not json"
    assert row["headers"]["trace"] == "a\\x00b"
    assert row["headers"]["raw"] == "\\xff"


async def test_a_signal_that_would_lift_the_portfolio_over_10_percent_heat_is_rejected(database: Database) -> None:
    portfolio = new_portfolio()
    feed, processor = SignalFeed(), make_processor(database)
    a, b, c = (trading_range() for _ in range(3))
    # Three campaigns of one portfolio (100,000.00); every entry risks (148.50 - 146.50) x 1,000 = 2,000.00 (2%):
    # Springs in A, B and C and an SOS in A put 8,000.00 at risk, 8% of the portfolio.
    await process(
        processor,
        feed,
        [feed.record(trade_signal(r, portfolio_id=portfolio)) for r in (a, b, c)]
        + [feed.record(trade_signal(a, pattern_type="SOS", phase="D", portfolio_id=portfolio))],
    )

    # An SOS in B makes exactly 10%: allowed. Then 0.02 more in C (1 share x 0.02) is over the limit.
    at_limit = trade_signal(b, pattern_type="SOS", phase="D", portfolio_id=portfolio)
    over = trade_signal(c, pattern_type="LPS", phase="D", stop_loss="148.48", position_size="1", portfolio_id=portfolio)
    result = await process(processor, feed, [feed.record(at_limit), feed.record(over)])

    assert [(o.outcome, o.reason) for o in result.outcomes] == [
        ("ADDED", None),
        ("REJECTED", "Portfolio heat limit exceeded (10% max)"),
    ]
    # Another portfolio is not affected by this one's heat.
    other = trade_signal(trading_range(), portfolio_id=new_portfolio())
    assert [o.outcome for o in (await process(processor, feed, [feed.record(other)])).outcomes] == ["CREATED"]


async def test_racing_workers_never_lift_a_portfolio_over_its_heat_limit(database: Database) -> None:
    portfolio = new_portfolio()
    # Two workers apply, at the same moment, 10 signals each on 20 different ranges of one portfolio; each signal
    # risks 2,000.00 (2%), so at most 5 of the 20 fit under the 10% heat limit.
    feed_a, feed_b = SignalFeed(), SignalFeed()
    worker_a, worker_b = make_processor(database), make_processor(database)
    batch_a = [feed_a.record(trade_signal(trading_range(), portfolio_id=portfolio)) for _ in range(10)]
    batch_b = [feed_b.record(trade_signal(trading_range(), portfolio_id=portfolio)) for _ in range(10)]

    results = await asyncio.gather(process(worker_a, feed_a, batch_a), process(worker_b, feed_b, batch_b))

    outcomes = [o.outcome for result in results for o in result.outcomes]
    assert outcomes.count("CREATED") == 5 and outcomes.count("REJECTED") == 15
    async with database.engine.connect() as connection:
        open_risk = await connection.scalar(
            select(func.sum(campaigns.c.current_risk)).where(
                campaigns.c.portfolio_id == portfolio, campaigns.c.status.in_(["ACTIVE", "MARKUP"])
            )
        )
    assert open_risk == Decimal("10000.00")
