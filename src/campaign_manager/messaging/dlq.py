"""`campaign-manager dlq replay`: sends dead-lettered records back to the topic they came from.

A dead letter carries the original key, value and headers plus the headers that say why it failed and where it
came from (see `service/outgoing.py`). Replay strips those and publishes the rest to `x-original-topic`, where
the worker takes it as a new record: a signal already applied is recognised by its id and changes nothing, one
that fails again is dead-lettered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

# Added by dead-lettering; the original record had none of them.
DEAD_LETTER_HEADER_PREFIXES = ("x-dlq-", "x-original-")
ORIGINAL_TOPIC_HEADER = "x-original-topic"
FETCH_TIMEOUT_MS = 200
SEND_BATCH = 500  # records handed to the producer before waiting for their acknowledgements


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> DeadLetter:
        return cls(record.topic, record.partition, record.offset, record.key, record.value, tuple(record.headers))

    def header(self, name: str) -> str | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value.decode("utf-8", errors="backslashreplace")
        return None

    @property
    def original_topic(self) -> str | None:
        return self.header(ORIGINAL_TOPIC_HEADER) or None

    @property
    def error_type(self) -> str:
        return self.header("x-dlq-error-type") or "unknown"

    @property
    def replay_headers(self) -> list[tuple[str, bytes]]:
        return [(name, value) for name, value in self.headers if not name.startswith(DEAD_LETTER_HEADER_PREFIXES)]

    def describe(self) -> str:
        key = self.key.decode("utf-8", errors="backslashreplace") if self.key is not None else "-"
        reason = (self.header("x-dlq-reason") or "")[:200]
        return (
            f"{self.topic}[{self.partition}]@{self.offset} -> {self.original_topic or '?'} key={key} "
            f"{self.error_type}: {reason}"
        )


@dataclass
class ReplaySummary:
    read: int = 0
    replayed: int = 0
    skipped_filtered: int = 0
    skipped_no_origin: int = 0


async def read_until_caught_up(
    consumer: AIOKafkaConsumer, topic: str, idle_timeout_s: float
) -> AsyncIterator[ConsumerRecord]:
    """Every record of `topic` from the earliest offset up to the end it had when reading began.

    The end of a partition is its highwater mark as the first fetch reports it (ListOffsets LATEST is not
    trusted: the embedded broker answers it wrongly). Records appended later, such as replayed records that fail
    again, are left for the next replay. If a partition's end stays unknown, reading stops once no record has
    come for `idle_timeout_s`.
    """
    await consumer.topics()  # loads the metadata partitions_for_topic reads
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        raise LookupError(f"topic {topic} does not exist")
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends: dict[TopicPartition, int] = {}
    last_record_at = time.monotonic()
    while True:
        batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if tp not in ends and highwater is not None:
                ends[tp] = highwater
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends.get(tp, record.offset + 1):
                    last_record_at = time.monotonic()
                    yield record
        caught_up = [tp for tp in partitions if tp in ends and await consumer.position(tp) >= ends[tp]]
        if len(caught_up) == len(partitions) or time.monotonic() - last_record_at > idle_timeout_s:
            return


async def replay_dead_letters(
    bootstrap_servers: str,
    dlq_topic: str,
    *,
    client_options: dict[str, Any],
    dry_run: bool = False,
    limit: int | None = None,
    error_types: Collection[str] = (),
    idle_timeout_s: float = 5.0,
    echo: Callable[[str], None] = print,
) -> ReplaySummary:
    summary = ReplaySummary()
    # No consumer group: replay commits nothing and must not join (and rebalance) the service's group.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_options,
    )
    producer = None
    if not dry_run:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", **client_options)
    await consumer.start()
    try:
        if producer is not None:
            await producer.start()
        pending: list[asyncio.Future[Any]] = []
        records = contextlib.aclosing(read_until_caught_up(consumer, dlq_topic, idle_timeout_s))
        async with records as dead_letters:
            async for record in dead_letters:
                summary.read += 1
                letter = DeadLetter.from_record(record)
                if error_types and letter.error_type not in error_types:
                    summary.skipped_filtered += 1
                    continue
                if letter.original_topic is None:
                    summary.skipped_no_origin += 1
                    echo(f"skipped (no {ORIGINAL_TOPIC_HEADER} header) {letter.describe()}")
                    continue
                if producer is None:
                    echo(f"would replay {letter.describe()}")
                else:
                    pending.append(
                        await producer.send(
                            letter.original_topic, letter.value, key=letter.key, headers=letter.replay_headers
                        )
                    )
                    echo(f"replaying {letter.describe()}")
                    if len(pending) >= SEND_BATCH:
                        await asyncio.gather(*pending)
                        pending.clear()
                summary.replayed += 1
                if limit is not None and summary.replayed >= limit:
                    break
        await asyncio.gather(*pending)  # acknowledged by the broker, or this raises
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    return summary
