"""Trading-range events applied to a real PostgreSQL: new levels are stored; a broken range invalidates its open
campaigns in every portfolio, and later signals in it are rejected."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select

from campaign_manager.contracts import TradingRangeEventMessage
from campaign_manager.examples import range_event, trade_signal, trading_range
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaigns, outbox, processed_messages, trading_ranges
from campaign_manager.service.batches import BatchResult, InvalidRecord, ParsedRecord
from campaign_manager.service.processor import BatchProcessor
from campaign_manager.service.ranges import RangePolicy, apply_range_batch
from campaign_manager.service.records import ConsumedRecord
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]


@dataclass
class RangeFeed:
    """A pretend `trading-ranges` topic (one partition) and a processor in its own consumer group."""

    database: Database
    topic: str = field(default_factory=lambda: f"trading-ranges-{uuid4().hex[:8]}")
    offsets: count = field(default_factory=count)

    def __post_init__(self) -> None:
        policy = RangePolicy(
            consumer_group=f"test-group-{uuid4().hex[:8]}",
            events_topic="campaign-events",
            dlq_topic=f"{self.topic}.dlq",
        )
        self.processor = BatchProcessor(
            self.database, partial(apply_range_batch, policy=policy), record_name="range_event"
        )

    def record(self, value: dict[str, Any] | bytes, offset: int | None = None) -> ParsedRecord:
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        consumed = ConsumedRecord(self.topic, 0, next(self.offsets) if offset is None else offset, None, raw)
        return parse_record(consumed, TradingRangeEventMessage)

    async def apply(self, *records: ParsedRecord) -> BatchResult:
        return await self.processor.process(self.topic, list(records))


def new_portfolio() -> str:
    return f"pf-{uuid4().hex[:12]}"


async def open_campaign(database: Database, range_: dict[str, Any], portfolio_id: str) -> UUID:
    feed, processor = SignalFeed(), make_processor(database)
    result = await process(processor, feed, [feed.record(trade_signal(range_, portfolio_id=portfolio_id))])
    (outcome,) = result.outcomes
    assert outcome.outcome == "CREATED"
    assert outcome.campaign_id is not None
    return outcome.campaign_id


async def campaign_row(database: Database, campaign_id: UUID) -> dict[str, Any]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(campaigns).where(campaigns.c.id == campaign_id))
        return dict(rows.mappings().one())


async def range_row(database: Database, range_id: str) -> dict[str, Any]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(trading_ranges).where(trading_ranges.c.id == UUID(range_id)))
        return dict(rows.mappings().one())


async def events_of(database: Database, campaign_id: UUID) -> list[dict[str, Any]]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.payload).where(outbox.c.aggregate_id == campaign_id).order_by(outbox.c.id)
        )
        return [json.loads(row.payload) for row in rows]


async def test_a_broken_range_invalidates_its_open_campaign_in_every_portfolio(database: Database) -> None:
    range_, elsewhere = trading_range(), trading_range()
    first, second = (
        await open_campaign(database, range_, new_portfolio()),
        await open_campaign(database, range_, new_portfolio()),
    )
    untouched = await open_campaign(database, elsewhere, new_portfolio())
    feed = RangeFeed(database)
    broken = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek", correlation_id="ranges-run-7")

    # The range detector says the range broke.
    result = await feed.apply(feed.record(broken))

    # Both portfolios' campaigns of that range are invalidated with the reason, one version step each.
    assert [(o.outcome, o.kind) for o in result.outcomes] == [("APPLIED", "RANGE_INVALIDATED")]
    for campaign_id in (first, second):
        row = await campaign_row(database, campaign_id)
        assert (row["status"], row["invalidation_reason"], row["version"]) == ("INVALIDATED", "Close below Creek", 2)
        assert row["completed_at"] is not None
        # ...announced as CampaignInvalidated then CampaignStatusChanged, caused by the range event.
        events = (await events_of(database, campaign_id))[1:]
        assert [(e["event_type"], e["campaign_version"]) for e in events] == [
            ("CampaignInvalidated", 2),
            ("CampaignStatusChanged", 2),
        ]
        assert {e["causation_id"] for e in events} == {broken["event_id"]}
        assert {e["correlation_id"] for e in events} == {"ranges-run-7"}
        assert events[0]["details"]["reason"] == "Close below Creek"
        assert events[0]["details"]["price"] is None
        assert events[1]["details"] == {
            "from_status": "ACTIVE",
            "to_status": "INVALIDATED",
            "reason": "Close below Creek",
        }
    # The range is stored as invalidated; a campaign of another range is left alone.
    stored = await range_row(database, range_["id"])
    assert (stored["status"], stored["invalidation_reason"]) == ("INVALIDATED", "Close below Creek")
    assert (await campaign_row(database, untouched))["status"] == "ACTIVE"


async def test_a_signal_in_an_invalidated_range_is_rejected_with_the_reason(database: Database) -> None:
    range_, portfolio = trading_range(), new_portfolio()
    invalidated = await open_campaign(database, range_, portfolio)
    feed = RangeFeed(database)
    await feed.apply(feed.record(range_event(range_, "RANGE_INVALIDATED", reason="Spring failed")))

    # A later signal of that range arrives.
    signals, processor = SignalFeed(), make_processor(database)
    late = trade_signal(range_, pattern_type="LPS", phase="D", position_size="100", portfolio_id=portfolio)
    result = await process(processor, signals, [signals.record(late)])

    # It is rejected like any broken rule: recorded, announced, and no new campaign is opened.
    (outcome,) = result.outcomes
    assert (outcome.outcome, outcome.reason) == ("REJECTED", "Trading range invalidated: Spring failed")
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(campaigns.c.id).where(campaigns.c.portfolio_id == portfolio))
        assert [row.id for row in rows] == [invalidated]
        payloads = await connection.execute(
            select(outbox.c.payload).where(outbox.c.event_type == "SignalRejected").order_by(outbox.c.id.desc())
        )
        rejections = [json.loads(row.payload) for row in payloads]
    (rejection,) = [e for e in rejections if e["causation_id"] == late["id"]]
    assert rejection["details"]["reason"] == "Trading range invalidated: Spring failed"


async def test_a_redelivered_range_event_changes_nothing(database: Database) -> None:
    range_ = trading_range()
    campaign_id = await open_campaign(database, range_, new_portfolio())
    feed = RangeFeed(database)
    broken = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek")
    await feed.apply(feed.record(broken))
    events_before = await events_of(database, campaign_id)

    # The same batch again (a redelivery), then the same event at a new offset (a producer retry), twice in a batch.
    again = await feed.apply(feed.record(broken, offset=0))
    resent = await feed.apply(feed.record(broken), feed.record(broken))

    assert again.skipped_already_applied == 1
    assert again.outcomes == []
    assert [o.outcome for o in resent.outcomes] == ["DUPLICATE", "DUPLICATE"]
    assert (await campaign_row(database, campaign_id))["version"] == 2
    assert await events_of(database, campaign_id) == events_before
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(processed_messages).where(processed_messages.c.message_id == UUID(broken["event_id"]))
        )
        (processed,) = rows.mappings().all()
    assert (processed["topic"], processed["outcome"]) == (feed.topic, "APPLIED")


async def test_an_event_sent_twice_in_one_batch_is_applied_once(database: Database) -> None:
    range_ = trading_range()
    campaign_id = await open_campaign(database, range_, new_portfolio())
    feed = RangeFeed(database)
    broken = range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek")

    result = await feed.apply(feed.record(broken), feed.record(broken))

    assert [o.outcome for o in result.outcomes] == ["APPLIED", "DUPLICATE"]
    assert (await campaign_row(database, campaign_id))["version"] == 2


async def test_a_range_update_stores_the_new_levels_and_phase(database: Database) -> None:
    range_ = trading_range(creek="148.00", ice="150.00", jump="156.00", phase="C")
    campaign_id = await open_campaign(database, range_, new_portfolio())
    feed = RangeFeed(database)

    # The detector revises the range: a higher Ice and Jump, phase D.
    revised = {**range_, "ice": "151.25", "jump": "158.50", "phase": "D"}
    result = await feed.apply(feed.record(range_event(revised)))

    assert [(o.outcome, o.kind) for o in result.outcomes] == [("APPLIED", "RANGE_UPDATED")]
    stored = await range_row(database, range_["id"])
    assert (str(stored["creek"]), str(stored["ice"]), str(stored["jump"]), stored["phase"]) == (
        "148.00000000",
        "151.25000000",
        "158.50000000",
        "D",
    )
    assert stored["status"] == "ACTIVE"
    # The campaign itself is not changed by new levels.
    assert (await campaign_row(database, campaign_id))["version"] == 1


async def test_a_range_first_heard_of_in_an_event_is_stored(database: Database) -> None:
    updated, broken = trading_range(), trading_range()
    feed = RangeFeed(database)

    await feed.apply(
        feed.record(range_event(updated)), feed.record(range_event(broken, "RANGE_INVALIDATED", reason="Gap down"))
    )

    assert (await range_row(database, updated["id"]))["status"] == "ACTIVE"
    assert (await range_row(database, broken["id"]))["status"] == "INVALIDATED"


async def test_an_update_after_invalidation_stores_the_levels_but_the_range_stays_invalidated(
    database: Database,
) -> None:
    range_ = trading_range()
    feed = RangeFeed(database)
    await feed.apply(feed.record(range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek")))

    # A late update of the broken range, and a second invalidation with another reason.
    await feed.apply(
        feed.record(range_event({**range_, "creek": "147.10"})),
        feed.record(range_event(range_, "RANGE_INVALIDATED", reason="Another reason")),
    )

    stored = await range_row(database, range_["id"])
    assert str(stored["creek"]) == "148.00000000"  # the second invalidation carried the first levels again
    assert (stored["status"], stored["invalidation_reason"]) == ("INVALIDATED", "Close below Creek")

    # ...and alone, the update stores its levels and still leaves the range invalidated.
    await feed.apply(feed.record(range_event({**range_, "creek": "147.10"})))
    stored = await range_row(database, range_["id"])
    assert (str(stored["creek"]), stored["status"]) == ("147.10000000", "INVALIDATED")
    # A signal in it is still rejected.
    signals, processor = SignalFeed(), make_processor(database)
    result = await process(processor, signals, [signals.record(trade_signal(range_, portfolio_id=new_portfolio()))])
    assert result.outcomes[0].reason == "Trading range invalidated: Close below Creek"


async def test_a_campaign_in_markup_is_invalidated_too(database: Database) -> None:
    range_, portfolio = trading_range(), new_portfolio()
    signals, processor = SignalFeed(), make_processor(database)
    sos = trade_signal(range_, pattern_type="SOS", phase="D", entry_price="150.25", stop_loss="148.75")
    sos["portfolio_id"] = portfolio
    (opened,) = (await process(processor, signals, [signals.record(sos)])).outcomes
    assert opened.campaign_id is not None
    feed = RangeFeed(database)

    await feed.apply(feed.record(range_event(range_, "RANGE_INVALIDATED", reason="Upthrust failed")))

    row = await campaign_row(database, opened.campaign_id)
    assert (row["status"], row["invalidation_reason"]) == ("INVALIDATED", "Upthrust failed")
    assert (await events_of(database, opened.campaign_id))[-1]["details"]["from_status"] == "MARKUP"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param({"reason": None}, "reason is required for RANGE_INVALIDATED", id="no-reason"),
        pytest.param({"reason": "   "}, "reason is required for RANGE_INVALIDATED", id="blank-reason"),
        pytest.param({"reason": "a\x00b"}, "NUL", id="nul-in-reason"),
        pytest.param({"event_type": "RANGE_MOVED"}, "event_type", id="unknown-type"),
    ],
)
async def test_a_malformed_range_event_is_dead_lettered_with_its_reason(
    database: Database, change: dict[str, Any], fragment: str
) -> None:
    range_ = trading_range()
    campaign_id = await open_campaign(database, range_, new_portfolio())
    feed = RangeFeed(database)
    event = {**range_event(range_, "RANGE_INVALIDATED", reason="Close below Creek"), **change}

    record = feed.record({k: v for k, v in event.items() if v is not None})
    result = await feed.apply(record)

    assert isinstance(record, InvalidRecord)
    (dead,) = result.dead_letters
    assert fragment in dead.reason
    assert result.next_offsets == {0: 1}
    assert (await campaign_row(database, campaign_id))["status"] == "ACTIVE"
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(outbox.c.headers).where(outbox.c.topic == f"{feed.topic}.dlq"))
        (headers,) = [row.headers for row in rows]
    assert fragment in headers["x-dlq-reason"]


async def test_a_signal_racing_its_ranges_invalidation_is_rejected_not_left_open(database: Database) -> None:
    portfolio, range_ = new_portfolio(), trading_range()
    signals, processor = SignalFeed(), make_processor(database)
    # The range is known (a first campaign in another portfolio), and still ACTIVE.
    await process(processor, signals, [signals.record(trade_signal(range_, portfolio_id=new_portfolio()))])

    # An invalidation holds the range and marks it broken, but has not committed yet...
    async with database.engine.connect() as invalidation:
        await invalidation.exec_driver_sql(f"SELECT id FROM trading_ranges WHERE id = '{range_['id']}' FOR UPDATE")
        await invalidation.exec_driver_sql(
            "UPDATE trading_ranges SET status = 'INVALIDATED', invalidation_reason = 'Close below Creek'"
            f" WHERE id = '{range_['id']}'"
        )
        # ... when a signal of a new portfolio opens a campaign in that range: it read the range as ACTIVE, and
        # its write waits on the range.
        racing = asyncio.create_task(
            process(processor, signals, [signals.record(trade_signal(range_, portfolio_id=portfolio))])
        )
        await asyncio.sleep(0.5)
        assert not racing.done()
        await invalidation.commit()

    # Once the invalidation commits, the signal is retried and rejected: no campaign is left open in a broken range.
    result = await racing
    assert [(o.outcome, o.reason) for o in result.outcomes] == [
        ("REJECTED", "Trading range invalidated: Close below Creek")
    ]
    async with database.engine.connect() as connection:
        opened = await connection.execute(select(campaigns.c.id).where(campaigns.c.portfolio_id == portfolio))
        assert opened.all() == []
