"""Consumed records and processors for tests that drive the service layer against a real database."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any
from uuid import uuid4

from campaign_manager.messaging.parsing import parse_signal_record
from campaign_manager.persistence.store import Database
from campaign_manager.service.processor import SignalProcessor
from campaign_manager.service.records import ConsumedRecord
from campaign_manager.service.signals import BatchResult, ParsedRecord, SignalPolicy


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


def make_processor(database: Database, default_portfolio_value: Decimal | None = None) -> SignalProcessor:
    policy = SignalPolicy(
        consumer_group=f"test-group-{uuid4().hex[:8]}",
        events_topic="campaign-events",
        dlq_topic="trade-signals.dlq",
        default_portfolio_value=default_portfolio_value,
    )
    return SignalProcessor(database, policy)


async def process(processor: SignalProcessor, feed: SignalFeed, records: list[ParsedRecord]) -> BatchResult:
    return await processor.process(feed.topic, records)
