"""Market prices applied to a real PostgreSQL: stops break at once, marks to market at most once per interval.

Every test trades its own made-up symbol: a price reaches every open campaign of its symbol, in any portfolio."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import count
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from campaign_manager.contracts import CampaignEventMessage
from campaign_manager.examples import AAPL_ENTRIES, trade_signal, trading_range
from campaign_manager.messaging.price_parsing import parse_price_record
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaign_positions, campaigns, consumer_offsets, outbox
from campaign_manager.service.batches import BatchResult
from campaign_manager.service.prices import PricePolicy, apply_price_batch
from campaign_manager.service.processor import BatchProcessor
from campaign_manager.service.records import ConsumedRecord
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]

INTERVAL = timedelta(seconds=5)


def new_symbol() -> str:
    return f"T{uuid4().hex[:10].upper()}"


@dataclass
class PriceFeed:
    """A pretend `market-prices` topic (one partition) and its handler in a consumer group of its own."""

    database: Database
    topic: str = field(default_factory=lambda: f"market-prices-{uuid4().hex[:8]}")
    offsets: count = field(default_factory=count)

    def __post_init__(self) -> None:
        self.policy = PricePolicy(
            consumer_group=f"test-group-{uuid4().hex[:8]}",
            events_topic="campaign-events",
            dlq_topic=f"{self.topic}.dlq",
            mark_to_market_interval=INTERVAL,
        )
        self.processor = BatchProcessor(
            self.database, partial(apply_price_batch, policy=self.policy), record_name="price"
        )

    def records(self, *ticks: tuple[str, str] | bytes, at: datetime | None = None) -> list[Any]:
        """(symbol, price) ticks, a second apart from `at` (default now), or raw values."""
        at = at or datetime.now(UTC)
        records = []
        for index, tick in enumerate(ticks):
            if isinstance(tick, bytes):
                key, value = None, tick
            else:
                symbol, price = tick
                time = (at + timedelta(seconds=index)).isoformat().replace("+00:00", "Z")
                key, value = symbol.encode(), json.dumps({"symbol": symbol, "price": price, "time": time}).encode()
            records.append(parse_price_record(ConsumedRecord(self.topic, 0, next(self.offsets), key, value)))
        return records

    async def apply(self, *ticks: tuple[str, str] | bytes) -> BatchResult:
        """One batch, through the processor as the worker runs it."""
        return await self.processor.process(self.topic, self.records(*ticks))

    async def apply_at(self, now: datetime, *ticks: tuple[str, str]) -> BatchResult:
        """One batch applied as if it were `now`."""
        async with self.database.transaction() as store:
            return await apply_price_batch(store, self.topic, self.records(*ticks, at=now), self.policy, now=now)


async def open_campaign(database: Database, symbol: str, *patterns: str) -> UUID:
    """A campaign of the story's entries (Spring 148.50/146.50, SOS 150.25/148.75, LPS 151.00/149.50, 1,000 shares
    each), those of `patterns` only, opened by the signal processor."""
    feed, processor = SignalFeed(), make_processor(database)
    range_ = trading_range(symbol=symbol)
    portfolio = f"pf-{uuid4().hex[:12]}"
    signals = [
        trade_signal(
            range_, pattern_type=p, phase=ph, entry_price=e, stop_loss=s, position_size=n, portfolio_id=portfolio
        )
        for p, ph, e, s, n in AAPL_ENTRIES
        if p in patterns
    ]
    result = await process(processor, feed, [feed.record(s) for s in signals])
    assert {o.outcome for o in result.outcomes} <= {"CREATED", "ADDED"}
    campaign_id = result.outcomes[0].campaign_id
    assert campaign_id is not None
    return campaign_id


async def campaign_row(database: Database, campaign_id: UUID) -> dict[str, Any]:
    async with database.engine.connect() as connection:
        row = (await connection.execute(select(campaigns).where(campaigns.c.id == campaign_id))).mappings().one()
    return dict(row)


async def current_prices(database: Database, campaign_id: UUID) -> dict[str, tuple[Decimal, Decimal]]:
    """pattern -> (current_price, current_pnl) of the campaign's positions."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(campaign_positions).where(campaign_positions.c.campaign_id == campaign_id)
        )
        return {row.pattern_type: (row.current_price, row.current_pnl) for row in rows}


async def events_of(database: Database, campaign_id: UUID, after_version: int = 0) -> list[dict[str, Any]]:
    """The campaign's events in the outbox, in relay order, from versions above `after_version`."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.payload).where(outbox.c.aggregate_id == campaign_id).order_by(outbox.c.id)
        )
        events = [json.loads(row.payload) for row in rows]
    return [e for e in events if e["campaign_version"] > after_version]


async def test_a_tick_above_the_stops_marks_the_campaign_to_market(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING", "SOS")
    prices = PriceFeed(database)

    # 152.00 is above both stops (146.50, 148.75).
    result = await prices.apply((symbol, "152.00"))

    # Unrealized: (152.00 - 148.50) x 1,000 + (152.00 - 150.25) x 1,000 = 3,500 + 1,750 = 5,250.00
    assert [(o.campaign_id, o.outcome, o.kind) for o in result.outcomes] == [(campaign_id, "APPLIED", "PRICE")]
    campaign = await campaign_row(database, campaign_id)
    assert (campaign["status"], campaign["version"]) == ("MARKUP", 3)
    assert campaign["unrealized_pnl"] == Decimal("5250.00")
    assert campaign["total_pnl"] == Decimal("5250.00")
    assert campaign["marked_to_market_at"] is not None
    assert await current_prices(database, campaign_id) == {
        "SPRING": (Decimal("152.00000000"), Decimal("3500.00")),
        "SOS": (Decimal("152.00000000"), Decimal("1750.00")),
    }
    # One event announces it, carrying the campaign as it now stands.
    (event,) = await events_of(database, campaign_id, after_version=2)
    CampaignEventMessage.model_validate(event)
    assert (event["event_type"], event["campaign_version"], event["causation_id"]) == (
        "CampaignMarkedToMarket",
        3,
        None,
    )
    assert event["details"] == {"price": "152.00", "unrealized_pnl": "5250.00", "total_pnl": "5250.00"}
    assert event["campaign"]["unrealized_pnl"] == "5250.00"


async def test_a_price_whose_pnl_could_not_be_recorded_leaves_the_campaign_as_it_was(database: Database) -> None:
    symbol, other = new_symbol(), new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING")
    other_id = await open_campaign(database, other, "SPRING")
    prices = PriceFeed(database)

    # A fat finger: (9,999,999,999 - 148.50) x 1,000 is far beyond NUMERIC(12,2). The batch goes on: the other
    # symbol's tick marks its campaign, and nothing is dead-lettered.
    with capture_logs() as logs:
        result = await prices.apply((symbol, "9999999999"), (other, "152.00"))

    reason = "Unrealized P&L 9999999850500.00 is beyond the largest amount a campaign records (±9999999999.99)"
    assert {(o.campaign_id, o.outcome, o.reason) for o in result.outcomes} == {
        (campaign_id, "REJECTED", reason),
        (other_id, "APPLIED", None),
    }
    assert result.dead_letters == []
    assert (await campaign_row(database, campaign_id))["version"] == 1
    assert await events_of(database, campaign_id, after_version=1) == []
    refusals = [(line["log_level"], line["reason"]) for line in logs if line["event"] == "market_price_refused"]
    assert refusals == [("warning", reason)]

    # The next price marks it.
    await prices.apply((symbol, "152.00"))
    assert (await campaign_row(database, campaign_id))["unrealized_pnl"] == Decimal("3500.00")  # (152 - 148.50) x 1,000


async def test_a_second_tick_inside_the_interval_writes_nothing(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING", "SOS")
    prices = PriceFeed(database)
    await prices.apply((symbol, "152.00"))
    marked = await campaign_row(database, campaign_id)

    # A moment later the price moves again, well within the 5 s interval.
    result = await prices.apply((symbol, "153.00"))

    # Nothing is written or published: the price waits for the next due mark.
    assert result.outcomes == []
    assert await campaign_row(database, campaign_id) == marked
    assert len(await events_of(database, campaign_id, after_version=2)) == 1
    # The tick is consumed all the same.
    assert result.next_offsets == {0: 2}


async def test_a_tick_after_the_interval_marks_again(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING")
    prices = PriceFeed(database)
    first = datetime.now(UTC)
    await prices.apply_at(first, (symbol, "150.00"))

    # Inside the interval: nothing; once it has passed: the latest price.
    await prices.apply_at(first + INTERVAL - timedelta(milliseconds=1), (symbol, "151.00"))
    await prices.apply_at(first + INTERVAL, (symbol, "152.00"))

    events = await events_of(database, campaign_id, after_version=1)
    assert [(e["event_type"], e["details"]["price"]) for e in events] == [
        ("CampaignMarkedToMarket", "150.00"),
        ("CampaignMarkedToMarket", "152.00"),
    ]
    campaign = await campaign_row(database, campaign_id)
    assert campaign["marked_to_market_at"] == first + INTERVAL
    assert campaign["unrealized_pnl"] == Decimal("3500.00")  # (152.00 - 148.50) x 1,000


async def test_a_tick_through_the_spring_stop_invalidates_the_campaign_at_once(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING", "SOS")
    prices = PriceFeed(database)
    await prices.apply((symbol, "152.00"))  # marked: the next mark is not due for 5 s

    # The price falls through the Spring's stop (146.50), inside the interval.
    result = await prices.apply((symbol, "146.40"))

    # Unrealized at 146.40: (146.40 - 148.50) x 1,000 + (146.40 - 150.25) x 1,000 = -2,100 - 3,850 = -5,950.00
    assert [(o.outcome, o.reason) for o in result.outcomes] == [("APPLIED", "Spring low break")]
    campaign = await campaign_row(database, campaign_id)
    assert (campaign["status"], campaign["invalidation_reason"], campaign["version"]) == (
        "INVALIDATED",
        "Spring low break",
        4,
    )
    assert campaign["unrealized_pnl"] == Decimal("-5950.00")
    assert campaign["completed_at"] is not None
    events = await events_of(database, campaign_id, after_version=3)
    assert [e["event_type"] for e in events] == ["CampaignInvalidated", "CampaignStatusChanged"]
    assert events[0]["details"] == {"reason": "Spring low break", "price": "146.40", "unrealized_pnl": "-5950.00"}
    assert events[1]["details"] == {"from_status": "MARKUP", "to_status": "INVALIDATED", "reason": "Spring low break"}
    for event in events:
        CampaignEventMessage.model_validate(event)

    # An ended campaign takes no more prices.
    assert (await prices.apply((symbol, "140.00"))).outcomes == []


async def test_a_tick_below_the_sos_stop_but_above_the_spring_stop_does_not_invalidate(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING", "SOS")
    prices = PriceFeed(database)

    # 148.00 is below the SOS stop (148.75) but the Spring low (146.50) holds the campaign.
    await prices.apply((symbol, "148.00"))

    campaign = await campaign_row(database, campaign_id)
    assert campaign["status"] == "MARKUP"
    assert campaign["unrealized_pnl"] == Decimal("-2750.00")  # -500 - 2,250


async def test_a_campaign_without_a_spring_is_invalidated_at_its_lowest_stop(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SOS", "LPS")
    prices = PriceFeed(database)

    # The lowest stop is the SOS's, 148.75; a price at it is a break.
    await prices.apply((symbol, "148.75"))

    campaign = await campaign_row(database, campaign_id)
    assert (campaign["status"], campaign["invalidation_reason"]) == ("INVALIDATED", "Stop level break")
    # (148.75 - 150.25) x 1,000 + (148.75 - 151.00) x 1,000 = -1,500 - 2,250 = -3,750.00
    invalidated = next(e for e in await events_of(database, campaign_id) if e["event_type"] == "CampaignInvalidated")
    assert invalidated["details"] == {"reason": "Stop level break", "price": "148.75", "unrealized_pnl": "-3750.00"}


async def test_a_dip_and_recovery_within_one_batch_still_invalidates(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING")
    prices = PriceFeed(database)

    # Within one batch the price dips through the stop and comes back above the entry.
    await prices.apply((symbol, "149.00"), (symbol, "146.00"), (symbol, "150.00"))

    campaign = await campaign_row(database, campaign_id)
    assert (campaign["status"], campaign["invalidation_reason"]) == ("INVALIDATED", "Spring low break")
    # Valued at the dip, the price that broke the stop: (146.00 - 148.50) x 1,000
    assert campaign["unrealized_pnl"] == Decimal("-2500.00")
    invalidated = next(e for e in await events_of(database, campaign_id) if e["event_type"] == "CampaignInvalidated")
    assert invalidated["details"]["price"] == "146.00"


async def test_every_open_campaign_of_the_symbol_gets_the_price(database: Database) -> None:
    symbol = new_symbol()
    with_spring = await open_campaign(database, symbol, "SPRING", "SOS")
    without_spring = await open_campaign(database, symbol, "SOS", "LPS")
    prices = PriceFeed(database)

    # 148.00 breaks the SOS + LPS campaign's lowest stop (148.75), not the Spring's (146.50).
    result = await prices.apply((symbol, "148.00"))

    assert {o.campaign_id: o.reason for o in result.outcomes} == {with_spring: None, without_spring: "Stop level break"}
    assert (await campaign_row(database, with_spring))["status"] == "MARKUP"
    assert (await campaign_row(database, without_spring))["status"] == "INVALIDATED"


async def test_a_tick_of_a_symbol_without_campaigns_changes_nothing(database: Database) -> None:
    prices = PriceFeed(database)

    result = await prices.apply((new_symbol(), "100.00"))

    assert result.outcomes == [] and result.dead_letters == []
    assert result.events_written == 0
    async with database.engine.connect() as connection:
        stored = (
            await connection.execute(
                select(consumer_offsets.c.next_offset).where(
                    consumer_offsets.c.consumer_group == prices.policy.consumer_group
                )
            )
        ).scalar_one()
    assert stored == 1  # consumed all the same


async def test_an_invalid_tick_is_dead_lettered_and_the_batch_goes_on(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING")
    prices = PriceFeed(database)

    bad = json.dumps({"symbol": symbol, "price": "-1", "time": "2024-10-15T14:30:00Z"}).encode()
    result = await prices.apply(bad, (symbol, "146.00"))

    assert [(d.error_type, d.reason) for d in result.dead_letters] == [
        ("ValidationError", "price: Input should be greater than 0")
    ]
    assert (await campaign_row(database, campaign_id))["status"] == "INVALIDATED"
    async with database.engine.connect() as connection:
        letter = (await connection.execute(select(outbox).where(outbox.c.topic == prices.policy.dlq_topic))).one()
    assert letter.payload == bad
    assert letter.headers["x-dlq-reason"] == "price: Input should be greater than 0"


async def test_a_redelivered_batch_changes_nothing(database: Database) -> None:
    symbol = new_symbol()
    campaign_id = await open_campaign(database, symbol, "SPRING")
    prices = PriceFeed(database)
    records = prices.records((symbol, "146.00"))
    await prices.processor.process(prices.topic, records)
    invalidated = await campaign_row(database, campaign_id)

    # The same record at the same offset comes back (a rebalance, a restart before Kafka's commit).
    again = await prices.processor.process(prices.topic, records)

    assert again.skipped_already_applied == 1 and again.outcomes == []
    assert await campaign_row(database, campaign_id) == invalidated


async def test_no_campaign_is_left_unlooked_at_that_a_price_could_break(database: Database) -> None:
    symbol = new_symbol()
    shapes = [("SPRING",), ("SPRING", "SOS"), ("SPRING", "SOS", "LPS"), ("SOS",), ("SOS", "LPS")]
    opened = [await open_campaign(database, symbol, *shape) for shape in shapes]

    # Prices look at each campaign's highest open stop first, and load only those a price reaches.
    async with database.transaction() as store:
        stops = {s.campaign_id: s for s in await store.open_campaign_stops([symbol])}
        campaigns = await store.lock_campaigns(opened)

    # Whatever stop the domain invalidates at is never above it.
    assert set(stops) == set(opened)
    for campaign_id, campaign in campaigns.items():
        level = campaign.invalidation_level()
        assert level is not None and stops[campaign_id].highest_open_stop >= level[0]
