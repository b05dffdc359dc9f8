"""Consumed records and processors for tests that drive the service layer against a real database."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from itertools import count
from typing import Any
from uuid import uuid4

from campaign_manager.messaging.parsing import parse_signal_record
from campaign_manager.persistence.store import Database
from campaign_manager.service.batches import BatchResult, ParsedRecord
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
