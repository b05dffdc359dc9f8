"""The outbox relay: publishes committed outbox messages in id order and takes them off the pending queue.

Exactly one worker relays at a time: the holder of a PostgreSQL advisory lock. That keeps events of one campaign
in commit order (two transactions that touch one campaign are serialised by its row lock, so the later one's
outbox ids are larger). The others wait to take over if the holder's connection drops.

Delivery is at-least-once: a crash between the broker's acknowledgement and the deletion of the pending ids
republishes a few messages, which consumers drop by `event_id`. If the broker is down, messages wait in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncConnection

from campaign_manager.persistence.store import Database
from campaign_manager.service.retry import backoff_seconds

log = structlog.get_logger(__name__)

RELAY_LOCK_SQL = "hashtext('campaign-manager-outbox-relay')"
NOTIFY_CHANNEL = "campaign_outbox"


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


# Sends records and waits for the broker: per record, None once acknowledged, or the error that stopped it.
Publish = Callable[[Sequence[OutgoingRecord]], Awaitable[list[BaseException | None]]]

PARTITIONS_TTL_S = 60.0  # how long a topic's partition list is trusted: partitions can be added, never removed
KEYS_CACHED = 100_000  # key -> partition answers kept; murmur2 is pure Python, and a campaign's key recurs


class BatchPublisher:
    """Publishes records with one produce batch per partition.

    aiokafka's `send` costs about 20 microseconds of Python per record; appending to a batch costs a few. The
    partition of a key is the one the default (Java-compatible murmur2) partitioner picks, as `send` would, so one
    campaign's events share a partition whoever publishes them. A record too large for a batch goes by `send`."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._key_partitions: dict[tuple[str, bytes], int] = {}

    async def publish(self, records: Sequence[OutgoingRecord]) -> list[BaseException | None]:
        by_partition: dict[tuple[str, int], list[int]] = {}
        for index, record in enumerate(records):
            partition = await self._partition_of(record.topic, record.key)
            by_partition.setdefault((record.topic, partition), []).append(index)
        sent: list[tuple[list[int], asyncio.Future[Any]]] = []
        for (topic, partition), indexes in by_partition.items():
            batch, in_batch = self.producer.create_batch(), []
            for index in indexes:
                record = records[index]
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                    if in_batch:  # full: send it and start the next one
                        sent.append((in_batch, await self.producer.send_batch(batch, topic, partition=partition)))
                        batch, in_batch = self.producer.create_batch(), []
                    if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                        future = await self.producer.send(
                            topic, record.value, key=record.key, partition=partition, headers=record.headers
                        )
                        sent.append(([index], future))
                        continue
                in_batch.append(index)
            if in_batch:
                sent.append((in_batch, await self.producer.send_batch(batch, topic, partition=partition)))
        outcomes = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        results: list[BaseException | None] = [None] * len(records)
        for (indexes, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for index in indexes:
                    results[index] = outcome
        return results

    async def _partition_of(self, topic: str, key: bytes | None) -> int:
        partitions = await self._partitions_of(topic)
        if key is None:
            return self._partitioner(None, partitions, partitions)
        cache_key = (topic, key)
        if (partition := self._key_partitions.get(cache_key)) is None or partition >= len(partitions):
            if len(self._key_partitions) >= KEYS_CACHED:
                self._key_partitions.clear()
            partition = self._key_partitions[cache_key] = self._partitioner(key, partitions, partitions)
        return partition

    async def _partitions_of(self, topic: str) -> list[int]:
        now = time.monotonic()
        known = self._partitions.get(topic)
        if known is None or now - known[0] > PARTITIONS_TTL_S:
            partitions = sorted(await self.producer.partitions_for(topic))
            if known is not None and len(partitions) != len(known[1]):
                self._key_partitions.clear()
            known = self._partitions[topic] = (now, partitions)
        return known[1]


EVENT_SOURCE = b"campaign-manager"
JSON_CONTENT_TYPE = b"application/json"


def event_headers(event_id: str, event_type: str, occurred_at: datetime, subject: str) -> list[tuple[str, bytes]]:
    """A campaign event's headers: its type and id for plain consumers, and the same as CloudEvents 1.0 attributes
    in Kafka binary mode (`ce_*`), with the JSON value as the event data."""
    event_id_bytes, event_type_bytes = event_id.encode(), event_type.encode()
    return [
        ("content-type", JSON_CONTENT_TYPE),
        ("event-type", event_type_bytes),
        ("event-id", event_id_bytes),
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id_bytes),
        ("ce_type", b"campaign-manager." + event_type_bytes),
        ("ce_source", EVENT_SOURCE),
        ("ce_time", occurred_at.isoformat().replace("+00:00", "Z").encode()),
        ("ce_subject", subject.encode()),
    ]


def _headers(row: Any) -> list[tuple[str, bytes]]:
    if row["headers"] is not None:  # a dead letter: its own headers, as stored
        return [(name, value.encode()) for name, value in json.loads(row["headers"]).items()]
    subject = str(row["aggregate_id"]) if row["aggregate_id"] else (row["message_key"] or b"").decode()
    return event_headers(str(row["event_id"]), row["event_type"], row["occurred_at"], subject)


class OutboxRelay:
    def __init__(self, database: Database, publish: Publish, *, batch_size: int, poll_interval_s: float) -> None:
        self.database = database
        self.publish = publish
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Something was just committed to the outbox: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                async with self.database.engine.connect() as connection:
                    if await self._lead(connection):
                        attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - database or broker outage: wait, then try again
                attempt += 1
                log.warning("outbox_relay_interrupted", attempt=attempt, error=str(error)[:300])
                await self._sleep(backoff_seconds(attempt))

    def stop(self) -> None:
        """Publish what is already committed, then leave `run` (the caller bounds how long it waits)."""
        self._stopping.set()
        self._wakeup.set()

    async def _lead(self, connection: AsyncConnection) -> bool:
        # Plain asyncpg on this dedicated connection, in autocommit: the advisory lock is held by the session,
        # and each statement below commits on its own.
        driver = (await connection.get_raw_connection()).driver_connection
        if not await driver.fetchval(f"SELECT pg_try_advisory_lock({RELAY_LOCK_SQL})"):
            await self._sleep(1.0)  # another worker relays; check again for a takeover
            return False
        log.info("outbox_relay_leading")

        def on_notify(*_: object) -> None:
            self._wakeup.set()

        try:
            # Taking ids off the pending queue need not wait for the disk: should the server crash before its WAL
            # is flushed, the ids come back and their messages are published again, as at-least-once allows. Saves
            # a flush per pass. Only while this session leads: reset before the connection returns to the pool.
            await driver.execute("SET synchronous_commit = off")
            await driver.add_listener(NOTIFY_CHANNEL, on_notify)
            while not self._stopping.is_set():
                self._wakeup.clear()
                while await self._publish_batch(driver) == self.batch_size:
                    pass
                if self._stopping.is_set():
                    break
                await self._sleep(self.poll_interval_s)
            # Flush what committed before the stop was asked for.
            while await self._publish_batch(driver) == self.batch_size:
                pass
        finally:
            with contextlib.suppress(Exception):
                await driver.remove_listener(NOTIFY_CHANNEL, on_notify)
            with contextlib.suppress(Exception):
                await driver.execute(f"SELECT pg_advisory_unlock({RELAY_LOCK_SQL}); RESET synchronous_commit")
        return True

    async def _publish_batch(self, driver: Any) -> int:
        started = time.perf_counter()
        # A probe of the outbox per pending id (LATERAL, fenced by OFFSET 0): never a plan that scans the outbox.
        rows = await driver.fetch(
            "SELECT o.* FROM (SELECT id FROM outbox_pending ORDER BY id LIMIT $1) AS p"
            " CROSS JOIN LATERAL (SELECT id, topic, message_key, payload, headers::text AS headers, event_id,"
            " event_type, occurred_at, aggregate_id FROM outbox WHERE outbox.id = p.id OFFSET 0) AS o ORDER BY o.id",
            self.batch_size,
        )
        if not rows:
            return 0
        # Every message to the producer first, then one wait for all acknowledgements: not a round trip each.
        selected = time.perf_counter()
        results = await self.publish(
            [OutgoingRecord(row["topic"], row["message_key"], row["payload"], _headers(row)) for row in rows]
        )
        acknowledged = time.perf_counter()
        delivered = [row["id"] for row, result in zip(rows, results, strict=True) if result is None]
        if delivered:
            await driver.execute(
                "DELETE FROM outbox_pending p USING unnest($1::bigint[]) AS k(id) WHERE p.id = k.id", delivered
            )
            log.debug(
                "outbox_published",
                messages=len(delivered),
                select_ms=round((selected - started) * 1000, 1),
                acknowledge_ms=round((acknowledged - selected) * 1000, 1),
                mark_ms=round((time.perf_counter() - acknowledged) * 1000, 1),
            )
        failed = len(rows) - len(delivered)
        if failed:
            first_error = next(r for r in results if r is not None)
            raise RuntimeError(f"{failed} of {len(rows)} outbox messages not acknowledged: {first_error!r}")
        return len(rows)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)
