"""The outbox relay on real servers: it publishes what is pending, empties the queue, and leaves no trace of its
session settings on the pool's connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from campaign_manager.messaging.relay import BatchPublisher, OutboxRelay
from campaign_manager.persistence.store import Database

pytestmark = [pytest.mark.integration]


async def test_the_relay_publishes_pending_messages_and_resets_its_session(
    database: Database, kafka_bootstrap_servers: str
) -> None:
    topic = f"relay-{uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    # Shaped as campaign events (JSON, caused by nothing): other tests read every event of the shared outbox.
    values = [json.dumps({"causation_id": None, "message": n}).encode() for n in range(3)]
    async with database.engine.begin() as connection:
        await connection.execute(text("DELETE FROM outbox_pending"))
        for value in values:
            await connection.execute(
                text(
                    "WITH m AS (INSERT INTO outbox (event_id, topic, message_key, payload, event_type, occurred_at)"
                    " VALUES (:event_id, :topic, 'k', :payload, 'CampaignCreated', now()) RETURNING id)"
                    " INSERT INTO outbox_pending (id) SELECT id FROM m"
                ),
                {"event_id": uuid4(), "topic": topic, "payload": value},
            )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all")
    await producer.start()
    relay = OutboxRelay(database, BatchPublisher(producer).publish, batch_size=100, poll_interval_s=0.05)
    running = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(30):
            while await _pending(database):  # noqa: ASYNC110 - the table is the state; there is no event to wait on
                await asyncio.sleep(0.05)
    finally:
        relay.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
        await producer.stop()

    assert [r.value for r in await _read(kafka_bootstrap_servers, topic, len(values))] == values
    # The relay skips the disk flush for its own deletions only; every pooled connection is back to the default.
    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(database.engine.connect()) for _ in range(5)]
        settings = [(await c.execute(text("SHOW synchronous_commit"))).scalar() for c in connections]
    assert settings == ["on"] * 5


async def _pending(database: Database) -> int:
    async with database.engine.connect() as connection:
        return (await connection.execute(text("SELECT count(*) FROM outbox_pending"))).scalar_one()


async def _read(bootstrap_servers: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(30):
            while len(records) < expected:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records
