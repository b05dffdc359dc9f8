"""Consumed records and processors for tests that drive the service layer against a real database."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from itertools import count
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import select

from campaign_manager.contracts import PositionEventMessage
from campaign_manager.examples import aapl_campaign_signals
from campaign_manager.messaging.parsing import parse_record
from campaign_manager.messaging.signal_parsing import parse_signal_record
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaign_positions
from campaign_manager.service.batches import BatchResult, ParsedRecord
from campaign_manager.service.positions import PositionPolicy, apply_position_event_batch
from campaign_manager.service.processor import BatchProcessor
from campaign_manager.service.records import ConsumedRecord
from campaign_manager.service.signals import SignalPolicy, apply_signal_batch


@dataclass
class SignalFeed:
    """A pretend partitioned topic: hands out offsets the way Kafka would, per partition."""

    topic: str = field(default_factory=lambda: f"trade-signals-{uuid4().hex[:8]}")
    _next_offsets: dict[int, count] = field(default_factory=dict)

    def record(
        self,
        value: dict[str, Any] | bytes | None,
        partition: int = 0,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> ParsedRecord:
        offsets = self._next_offsets.setdefault(partition, count())
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        return parse_signal_record(ConsumedRecord(self.topic, partition, next(offsets), key, raw, headers))


def make_processor(
    database: Database, default_portfolio_value: Decimal | None = None, consumer_group: str | None = None
) -> BatchProcessor:
    policy = SignalPolicy(
        consumer_group=consumer_group or f"test-group-{uuid4().hex[:8]}",
        events_topic="campaign-events",
        dlq_topic="trade-signals.dlq",
        default_portfolio_value=default_portfolio_value,
    )
    return BatchProcessor(database, partial(apply_signal_batch, policy=policy), record_name="signal")


async def process(processor: BatchProcessor, feed: SignalFeed, records: list[ParsedRecord]) -> BatchResult:
    return await processor.process(feed.topic, records)


@dataclass
class PositionFeed:
    """A pretend `position-events` topic (one partition) and a processor in its own consumer group."""

    database: Database
    topic: str = field(default_factory=lambda: f"position-events-{uuid4().hex[:8]}")
    offsets: count = field(default_factory=count)

    def __post_init__(self) -> None:
        policy = PositionPolicy(
            consumer_group=f"test-group-{uuid4().hex[:8]}",
            events_topic="campaign-events",
            dlq_topic=f"{self.topic}.dlq",
        )
        self.processor = BatchProcessor(
            self.database, partial(apply_position_event_batch, policy=policy), record_name="position_event"
        )

    def record(self, value: dict[str, Any] | bytes) -> ParsedRecord:
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        key = value["campaign_id"].encode() if isinstance(value, dict) else None
        return parse_record(ConsumedRecord(self.topic, 0, next(self.offsets), key, raw), PositionEventMessage)

    async def apply(self, *events: dict[str, Any] | bytes) -> BatchResult:
        return await self.processor.process(self.topic, [self.record(e) for e in events])


@dataclass(frozen=True)
class AaplCampaign:
    """The story's campaign: Spring 148.50/146.50, SOS 150.25/148.75, LPS 151.00/149.50, 1,000 shares each."""

    id: UUID
    spring: str
    sos: str
    lps: str


async def open_aapl_campaign(database: Database, *patterns: str) -> AaplCampaign:
    """The campaign built by the signal processor from the story's signals (all three unless told)."""
    feed, processor = SignalFeed(), make_processor(database)
    signals = aapl_campaign_signals(portfolio_id=f"pf-{uuid4().hex[:12]}")
    signals = [s for s in signals if not patterns or s["pattern_type"] in patterns]
    result = await process(processor, feed, [feed.record(s) for s in signals])
    assert {o.outcome for o in result.outcomes} <= {"CREATED", "ADDED"}
    campaign_id = result.outcomes[0].campaign_id
    assert campaign_id is not None
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(campaign_positions.c.pattern_type, campaign_positions.c.position_id).where(
                campaign_positions.c.campaign_id == campaign_id
            )
        )
        positions = {row.pattern_type: str(row.position_id) for row in rows}
    return AaplCampaign(campaign_id, positions.get("SPRING", ""), positions.get("SOS", ""), positions.get("LPS", ""))
