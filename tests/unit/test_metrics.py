"""Metrics count committed batches by outcome, time batches, and read the consumer's lag without asking the broker."""

from __future__ import annotations

from types import SimpleNamespace
from uuid import uuid4

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from campaign_manager.metrics import Metrics, partition_lags
from campaign_manager.service.batches import BatchResult, InvalidRecord, RecordOutcome
from campaign_manager.service.records import ConsumedRecord


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def outcome(kind: str) -> RecordOutcome:
    return RecordOutcome(uuid4(), kind, None, None, None, "SPRING")


def dead_letter(error_type: str) -> InvalidRecord:
    return InvalidRecord(ConsumedRecord("trade-signals", 0, 0, None, b"x", ()), "bad", error_type)


def test_committed_outcomes_are_counted_by_kind() -> None:
    metrics = Metrics(["trade-signals"])
    result = BatchResult(
        outcomes=[outcome("CREATED"), outcome("ADDED"), outcome("ADDED"), outcome("REJECTED"), outcome("DUPLICATE")],
        dead_letters=[dead_letter("ValidationError"), dead_letter("ValidationError"), dead_letter("DecodeError")],
    )

    metrics.record_committed("trade-signals", result)
    metrics.record_committed("trade-signals", BatchResult(outcomes=[outcome("CREATED")]))

    counted = samples(metrics)
    by_outcome = {
        dict(labels)["outcome"]: value
        for (name, labels), value in counted.items()
        if name == "campaign_manager_messages_processed_total"
    }
    assert by_outcome == {"applied": 4, "rejected": 1, "duplicate": 1, "dead_lettered": 3}
    topic = ("topic", "trade-signals")
    assert counted[("campaign_manager_dead_letters_total", (("error_type", "ValidationError"), topic))] == 2
    assert counted[("campaign_manager_dead_letters_total", (("error_type", "DecodeError"), topic))] == 1
    assert counted[("campaign_manager_dead_letters_total", (("error_type", "ProcessingError"), topic))] == 0


def test_two_workers_in_one_process_keep_separate_metrics() -> None:
    first, second = Metrics(["trade-signals"]), Metrics(["trade-signals"])

    first.record_committed("trade-signals", BatchResult(outcomes=[outcome("CREATED")]))

    key = ("campaign_manager_messages_processed_total", (("outcome", "applied"), ("topic", "trade-signals")))
    assert samples(first)[key] == 1
    assert samples(second)[key] == 0


async def test_a_batch_is_timed_and_sized_even_when_its_handler_fails() -> None:
    metrics = Metrics()
    timer = metrics.middleware()(None, context=None)
    batch = SimpleNamespace(raw_message=(object(), object(), object()))

    async def failing_handler(message: object) -> None:
        raise RuntimeError("database gone")

    try:
        await timer.consume_scope(failing_handler, batch)
    except RuntimeError:
        pass

    counted = samples(metrics)
    assert counted[("campaign_manager_batch_records_count", ())] == 1
    assert counted[("campaign_manager_batch_records_sum", ())] == 3
    assert counted[("campaign_manager_batch_duration_seconds_count", ())] == 1


class FakeConsumer:
    """What aiokafka's consumer knows locally: its assignment, last high watermarks and positions."""

    def __init__(self, highwaters: dict[TopicPartition, int | None], positions: dict[TopicPartition, int]) -> None:
        self.highwaters = highwaters
        self.positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def test_lag_is_the_high_watermark_minus_the_position_of_each_fetched_partition() -> None:
    p0, p1, p2 = (TopicPartition("trade-signals", p) for p in range(3))
    consumer = FakeConsumer({p0: 120, p1: 40, p2: None}, {p0: 100, p1: 40, p2: 0})
    metrics = Metrics()

    metrics.set_consumer_lag(await partition_lags(consumer))  # type: ignore[arg-type]

    counted = samples(metrics)
    assert counted[("campaign_manager_consumer_lag", (("partition", "0"), ("topic", "trade-signals")))] == 20
    assert counted[("campaign_manager_consumer_lag", (("partition", "1"), ("topic", "trade-signals")))] == 0
    assert ("campaign_manager_consumer_lag", (("partition", "2"), ("topic", "trade-signals"))) not in counted


async def test_revoked_partitions_leave_the_lag_gauge() -> None:
    p0, p1 = TopicPartition("trade-signals", 0), TopicPartition("trade-signals", 1)
    metrics = Metrics()
    metrics.set_consumer_lag({p0: 5, p1: 7})

    metrics.set_consumer_lag({p1: 2})

    lags = {labels: v for (name, labels), v in samples(metrics).items() if name == "campaign_manager_consumer_lag"}
    assert lags == {(("partition", "1"), ("topic", "trade-signals")): 2}
