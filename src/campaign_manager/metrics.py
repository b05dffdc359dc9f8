"""Prometheus metrics of one worker, served at `GET /metrics`.

Each `Metrics` has a registry of its own, not prometheus_client's global one, so that several workers or apps in
one process (the tests) never share or collide on a series.

Counters and histograms are updated once per committed batch, never once per signal. Gauges that describe state
elsewhere (the outbox in PostgreSQL, the consumer's position against the broker) are read when scraped: see
`refresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from operator import attrgetter
from typing import Any, get_args

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream import BaseMiddleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from campaign_manager.contracts import DeadLetterErrorType
from campaign_manager.service.batches import BatchResult

PREFIX = "campaign_manager"
OUTCOMES = ("applied", "rejected", "duplicate", "dead_lettered")
# RecordOutcome.outcome -> the `outcome` label: opening and joining a campaign are both "applied".
_OUTCOME_LABELS = {
    "CREATED": "applied", "ADDED": "applied", "APPLIED": "applied", "REJECTED": "rejected", "DUPLICATE": "duplicate",
}  # fmt: skip
_outcome_of = attrgetter("outcome")
POSITION_TIMEOUT_S = 0.1  # a partition still seeking has no position yet; its lag is left out of this scrape

Refresher = Callable[[], Awaitable[None]]


class Metrics:
    def __init__(self, topics: Sequence[str] = ()) -> None:
        """`topics`: the consumed topics, whose series are exported from the start, at 0."""
        self.registry = CollectorRegistry()
        self.messages = Counter(
            f"{PREFIX}_messages_processed",
            "Consumed records by topic and outcome: applied (a signal opened or joined a campaign, an event changed "
            "one), rejected (a business rule), duplicate (message id seen before), dead_lettered (not a valid "
            "message).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Records written to a dead-letter topic, by consumed topic and x-dlq-error-type.",
            ["topic", "error_type"],
            registry=self.registry,
        )
        for topic in topics:
            for outcome in OUTCOMES:
                self.messages.labels(topic, outcome)
            for error_type in get_args(DeadLetterErrorType):
                self.dead_letters.labels(topic, error_type)
        self.batch_records = Histogram(
            f"{PREFIX}_batch_records",
            "Records per consumed batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "From a batch handed to the handler to its transaction committed; the offsets' mirror to Kafka follows.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            f"{PREFIX}_outbox_backlog",
            "Outbox messages (events and dead letters) committed but not yet published.",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            f"{PREFIX}_outbox_oldest_unsent_age_seconds",
            "Age of the next outbox message to publish; 0 when none waits.",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Records on the broker this worker has not fetched yet, per assigned partition (high watermark of the "
            "last fetch minus the consumer's position).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._refreshers: list[Refresher] = []

    def record_committed(self, topic: str, result: BatchResult) -> None:
        """Counts one committed transaction's outcomes."""
        # Tally(map(...)) counts in C: no Python bytecode runs per record.
        for outcome, count in Tally(map(_outcome_of, result.outcomes)).items():
            self.messages.labels(topic, _OUTCOME_LABELS.get(outcome, outcome.lower())).inc(count)
        if result.dead_letters:
            self.messages.labels(topic, "dead_lettered").inc(len(result.dead_letters))
            for error_type, count in Tally(dead.error_type for dead in result.dead_letters).items():
                self.dead_letters.labels(topic, error_type).inc(count)

    def record_batch(self, records: int, seconds: float) -> None:
        self.batch_records.observe(records)
        self.batch_duration.observe(seconds)

    def set_outbox(self, backlog: int, oldest_unsent_age_s: float) -> None:
        self.outbox_backlog.set(backlog)
        self.outbox_oldest_age.set(oldest_unsent_age_s)

    def set_consumer_lag(self, lags: dict[TopicPartition, int]) -> None:
        # Replaced as a whole: partitions revoked since the last scrape must not linger with their old lag.
        self.consumer_lag.clear()
        for tp, lag in lags.items():
            self.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def before_scrape(self, refresher: Refresher) -> None:
        """`refresher` runs at every scrape, before the exposition is rendered."""
        self._refreshers.append(refresher)

    async def refresh(self) -> None:
        for refresher in self._refreshers:
            await refresher()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self) -> Callable[..., BaseMiddleware]:
        """For `KafkaBroker(middlewares=...)`: times every consumed batch."""
        return functools.partial(BatchTimer, metrics=self)


class BatchTimer(BaseMiddleware):
    """Times the handler's work on one batch, failed batches included."""

    def __init__(self, msg: Any, /, *, context: Any, metrics: Metrics) -> None:
        super().__init__(msg, context=context)
        self.metrics = metrics

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(msg)
        finally:
            # A batch subscriber's raw message is the tuple of consumed records.
            self.metrics.record_batch(len(msg.raw_message), time.perf_counter() - started)


async def partition_lags(consumer: AIOKafkaConsumer | None) -> dict[TopicPartition, int]:
    """Lag per assigned partition, from what the consumer already knows: no request to the broker.

    `end_offsets` would ask the broker, and the embedded one answers it wrongly; the high watermark comes with
    every fetch response. A partition not fetched yet, or still seeking, is left out."""
    if consumer is None:
        return {}
    highwaters = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
    lags = {}
    for tp, highwater in highwaters.items():
        if highwater is None:
            continue
        # Revoked meanwhile (IllegalStateError) or no position yet (timeout): skip it this time.
        with contextlib.suppress(Exception):
            position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
            lags[tp] = max(highwater - position, 0)
    return lags
