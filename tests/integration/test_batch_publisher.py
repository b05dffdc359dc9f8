"""The relay's publisher sends one batch per partition, to the partition Kafka's default partitioner picks."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from campaign_manager.messaging.relay import BatchPublisher, OutgoingRecord

pytestmark = [pytest.mark.integration]

PARTITIONS = 4


async def read_all(bootstrap_servers: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
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


async def test_records_keep_their_key_partition_order_and_headers(kafka_bootstrap_servers: str) -> None:
    topic = f"publisher-{uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all", max_batch_size=16 * 1024)
    await producer.start()
    try:
        # 10 keys, 30 records each, interleaved; values big enough that one partition's records span batches;
        # one record too big for any batch.
        keys = [f"campaign-{i}".encode() for i in range(10)]
        records = [
            OutgoingRecord(topic, key, f"{key.decode()}#{n}:".encode() + b"x" * 500, [("event-id", str(n).encode())])
            for n in range(30)
            for key in keys
        ]
        records.append(OutgoingRecord(topic, keys[0], b"big:" + b"y" * 64 * 1024, []))
        results = await BatchPublisher(producer).publish(records)
    finally:
        await producer.stop()

    assert results == [None] * len(records)
    consumed = await read_all(kafka_bootstrap_servers, topic, len(records))
    assert len(consumed) == len(records)
    partitioner, all_partitions = DefaultPartitioner(), list(range(PARTITIONS))
    for record in consumed:
        assert record.partition == partitioner(record.key, all_partitions, all_partitions)
    for key in keys:
        values = [r.value.split(b":")[0] for r in sorted(consumed, key=lambda r: r.offset) if r.key == key]
        expected = [f"{key.decode()}#{n}".encode() for n in range(30)] + ([b"big"] if key == keys[0] else [])
        assert values == expected
    assert dict(next(r for r in consumed if r.key == keys[3]).headers)["event-id"] == b"0"
