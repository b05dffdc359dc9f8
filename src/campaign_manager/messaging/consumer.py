"""The consumers: one FastStream batch subscriber per consumed topic, each handing its batches to a processor.

Acknowledgement is ours, not FastStream's (`AckPolicy.MANUAL`). With 0.7.8 the other policies commit a batch whose
handler raised, and `ack()` commits the position of every assigned partition. Instead:
- the offsets a batch advances are stored in PostgreSQL in the batch's own transaction (the truth);
- on assignment the consumer seeks to those stored offsets, so a Kafka commit that ran ahead can never skip a
  record, and one that lags only causes re-reads that the stored offsets filter out;
- after the transaction commits, the same offsets are committed to Kafka explicitly, per partition, so that lag
  metrics and autoscalers see progress. That commit runs in the background (`OffsetMirror`): a slow or frozen
  broker must not hold up the next batch, whose records are already fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from faststream.kafka.subscriber.usecase import LogicSubscriber
from sqlalchemy import select

from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import consumer_offsets
from campaign_manager.service.batches import ParsedRecord
from campaign_manager.service.processor import BatchProcessor
from campaign_manager.service.records import ConsumedRecord
from campaign_manager.settings import Settings

log = structlog.get_logger(__name__)

BATCH_FAILED_PAUSE_S = 1.0  # a batch that could not even be dead-lettered: the database itself is failing


def consumed_record(raw: ConsumerRecord) -> ConsumedRecord:
    return ConsumedRecord(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        headers=tuple(raw.headers or ()),
    )


class SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume each partition from the offset PostgreSQL says is next."""

    def __init__(self, database: Database, group: str, subscriber: Callable[[], LogicSubscriber]) -> None:
        self.database = database
        self.group = group
        self.subscriber = subscriber

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.subscriber().consumer
        if not assigned or consumer is None:
            return
        try:
            async with self.database.engine.connect() as connection:
                rows = await connection.execute(
                    select(
                        consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset
                    ).where(consumer_offsets.c.consumer_group == self.group)
                )
                stored = {TopicPartition(r.topic, r.partition): r.next_offset for r in rows}
        except Exception as error:  # noqa: BLE001 - the stored-offset filter still guards every batch
            log.warning("stored_offsets_unavailable_on_assignment", error=str(error)[:300])
            return
        for tp in assigned:
            if tp in stored:
                consumer.seek(tp, stored[tp])
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}-{tp.partition}@{stored.get(tp, 'kafka')}" for tp in assigned),
        )


async def _raw_batch_parser(records: tuple[ConsumerRecord, ...], original: Any) -> KafkaMessage:
    # FastStream's own batch parser decodes headers as UTF-8 and raises on anything else, before any handler
    # runs: a poison message would stop the partition. Ours keeps the bytes and leaves judgement to parsing.py.
    return KafkaMessage(records, body=records, consumer=None)  # type: ignore[arg-type]


async def _raw_body(message: KafkaMessage, original: Any) -> Any:
    return message.body


def register_batch_subscriber(
    broker: KafkaBroker,
    settings: Settings,
    database: Database,
    topic: str,
    parse: Callable[[ConsumedRecord], ParsedRecord],
    processor: BatchProcessor,
    *,
    title: str,
    description: str,
    max_records: int | None = None,
    fetch_max_wait_ms: int | None = None,
) -> LogicSubscriber:
    """A batch subscriber of `topic` in the service's consumer group: each batch parsed record by record, then
    applied exactly once by `processor`. `max_records`: records per batch (default BATCH_MAX_RECORDS);
    `fetch_max_wait_ms`: how long the broker may hold an empty fetch (default KAFKA_FETCH_MAX_WAIT_MS)."""
    subscriber_ref: list[LogicSubscriber] = []
    subscriber = broker.subscriber(
        topic,
        group_id=settings.consumer_group_of(topic),
        batch=True,
        max_records=max_records or settings.batch_max_records,
        # FastStream waits this long for records and, when none came, sleeps as long again: keep it short.
        batch_timeout_ms=settings.kafka_batch_timeout_ms,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms,
        listener=SeekToStoredOffsets(database, settings.consumer_group_of(topic), lambda: subscriber_ref[0]),
        parser=_raw_batch_parser,
        decoder=_raw_body,
        title=title,
        description=description,
    )
    subscriber_ref.append(subscriber)
    mirror = OffsetMirror(topic)

    @subscriber
    async def on_batch(raw_records: tuple[ConsumerRecord, ...]) -> None:  # the batch as `_raw_body` decodes it
        parsed = [parse(consumed_record(raw)) for raw in raw_records]
        try:
            result = await processor.process(topic, parsed)
        except Exception:  # noqa: BLE001 - logged by the processor; handled by reading the batch again
            # Nothing of this batch was stored. Left as it is, the consumer would go on with the next records and
            # their offsets would pass over these: read them again instead, after a pause.
            _rewind(subscriber.consumer, raw_records)
            await asyncio.sleep(BATCH_FAILED_PAUSE_S)
            return
        mirror.commit(subscriber.consumer, result.next_offsets)

    return subscriber


def _rewind(consumer: Any, records: tuple[ConsumerRecord, ...]) -> None:
    if consumer is None:
        return
    first_offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first_offsets[tp] = min(first_offsets.get(tp, record.offset), record.offset)
    for tp, offset in first_offsets.items():
        if tp in consumer.assignment():
            consumer.seek(tp, offset)


class OffsetMirror:
    """Commits stored offsets to Kafka one commit at a time, in the background; offsets of batches committed
    meanwhile are merged into the next one, so a stalled commit delays only lag figures."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._pending: dict[int, int] = {}
        self._committing: asyncio.Task[None] | None = None

    def commit(self, consumer: Any, next_offsets: dict[int, int]) -> None:
        self._pending.update(next_offsets)
        if self._pending and (self._committing is None or self._committing.done()):
            self._committing = asyncio.create_task(self._commit_pending(consumer), name=f"mirror-{self.topic}")

    async def _commit_pending(self, consumer: Any) -> None:
        while self._pending:
            offsets, self._pending = self._pending, {}
            await _mirror_offsets(consumer, self.topic, offsets)


async def _mirror_offsets(consumer: Any, topic: str, next_offsets: dict[int, int]) -> None:
    """Mirror the stored offsets into Kafka's group offsets, so lag metrics and autoscalers see progress.
    PostgreSQL, not Kafka, decides where to resume, so a failed commit here loses nothing."""
    if consumer is None or not next_offsets:
        return
    assigned = consumer.assignment()
    offsets = {TopicPartition(topic, p): o for p, o in next_offsets.items() if TopicPartition(topic, p) in assigned}
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except Exception as error:  # noqa: BLE001 - typically a rebalance in progress; the next batch commits again
        log.debug("kafka_commit_hint_failed", error=str(error)[:300])
