"""The Kafka offset mirror: commits in the background, merged, at most once per interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from campaign_manager.messaging.consumer import OffsetMirror

TOPIC = "trade-signals"


class RecordingConsumer:
    """The two calls the mirror makes on an aiokafka consumer, recorded with the time they were made."""

    def __init__(self, partitions: range) -> None:
        self.assigned = {TopicPartition(TOPIC, p) for p in partitions}
        self.commits: list[tuple[float, dict[int, int]]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((time.monotonic(), {tp.partition: offset for tp, offset in offsets.items()}))


async def settle(mirror: OffsetMirror) -> None:
    if mirror._committing is not None:
        await mirror._committing


async def test_batches_committed_within_an_interval_are_mirrored_together_after_it() -> None:
    consumer: Any = RecordingConsumer(range(3))
    mirror = OffsetMirror(TOPIC, interval_s=0.2)

    started = time.monotonic()
    mirror.commit(consumer, {0: 10})
    await asyncio.sleep(0.01)  # the first commit goes at once
    mirror.commit(consumer, {0: 20, 1: 5})
    mirror.commit(consumer, {1: 7, 2: 3})
    await settle(mirror)

    assert [offsets for _, offsets in consumer.commits] == [{0: 10}, {0: 20, 1: 7, 2: 3}]
    first_at, second_at = (at for at, _ in consumer.commits)
    assert first_at - started < 0.1
    assert second_at - first_at >= 0.2


async def test_offsets_of_partitions_no_longer_assigned_are_not_mirrored() -> None:
    consumer: Any = RecordingConsumer(range(2))
    mirror = OffsetMirror(TOPIC, interval_s=0.0)

    mirror.commit(consumer, {0: 4, 1: 9, 5: 2})
    await settle(mirror)

    assert [offsets for _, offsets in consumer.commits] == [{0: 4, 1: 9}]
