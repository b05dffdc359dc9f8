"""What every consumed batch shares, whatever its topic: parsed records, the offsets it may still apply, the dead
letters of records that are not valid messages, and what it did.

Each topic's handler (`signals.py`, `positions.py`, `prices.py`, `ranges.py`) applies one batch in one
transaction: `claim_batch` first, then its own reads, domain calls and one `CampaignStore.write`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar
from uuid import UUID

from campaign_manager.domain.campaign import Campaign
from campaign_manager.persistence.store import CampaignStore, OutboxMessage
from campaign_manager.service.outgoing import dead_letter_message
from campaign_manager.service.records import ConsumedRecord

Message = TypeVar("Message")


@dataclass(frozen=True)
class ValidRecord(Generic[Message]):
    record: ConsumedRecord
    message: Message


@dataclass(frozen=True)
class InvalidRecord:
    record: ConsumedRecord
    reason: str
    error_type: str


ParsedRecord = ValidRecord[Any] | InvalidRecord


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one valid record: one line of the processing log."""

    message_id: UUID | None  # the signal or event id; None for messages without one (prices)
    outcome: str  # signals: CREATED | ADDED | REJECTED | DUPLICATE; other topics: APPLIED | REJECTED | DUPLICATE
    campaign_id: UUID | None
    human_campaign_id: str | None
    correlation_id: str | None
    kind: str  # the signal's pattern type, or the event's type
    reason: str | None = None


@dataclass
class BatchResult:
    outcomes: list[RecordOutcome] = field(default_factory=list)
    dead_letters: list[InvalidRecord] = field(default_factory=list)
    allocation_warnings: list[tuple[Campaign, Decimal]] = field(default_factory=list)
    refused_prices: list[tuple[Campaign, Decimal, str]] = field(default_factory=list)  # campaign, price, reason
    skipped_already_applied: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)
    events_written: int = 0


# Applies one batch of one topic inside the unit of work's transaction.
ApplyBatch = Callable[[CampaignStore, str, Sequence[ParsedRecord]], Awaitable[BatchResult]]


@dataclass
class ClaimedBatch:
    """The records of a batch not applied yet, what the batch did so far (`result`: the offsets it advances, the
    records skipped and dead-lettered) and the dead letters to write."""

    fresh: list[ParsedRecord]
    result: BatchResult
    dead_letters: list[OutboxMessage]

    def valid(self) -> list[ValidRecord[Any]]:
        return [r for r in self.fresh if isinstance(r, ValidRecord)]


async def claim_batch(
    store: CampaignStore, topic: str, records: Sequence[ParsedRecord], *, consumer_group: str, dlq_topic: str
) -> ClaimedBatch:
    """The first step of every batch: lock the stored offsets of its partitions, drop what was already applied,
    and turn the records that are not valid messages into dead letters.

    Stored offsets are the truth, Kafka's only a hint: after a rebalance or a redelivery, records below the stored
    offset were applied by this or another consumer and must change nothing."""
    stored = await store.lock_offsets(consumer_group, topic, {r.record.partition for r in records})
    return claim(records, stored, dlq_topic=dlq_topic)


def claim(records: Sequence[ParsedRecord], stored: Mapping[int, int], *, dlq_topic: str) -> ClaimedBatch:
    """`claim_batch` once the stored offsets (`stored`: partition -> next unapplied offset) are locked."""
    result = BatchResult()
    fresh = [r for r in records if r.record.offset >= stored[r.record.partition]]
    for r in records:
        partition = r.record.partition
        result.next_offsets[partition] = max(result.next_offsets.get(partition, stored[partition]), r.record.offset + 1)
    result.skipped_already_applied = len(records) - len(fresh)
    dead_letters = []
    for r in fresh:
        if isinstance(r, InvalidRecord):
            dead_letters.append(
                dead_letter_message(r.record, reason=r.reason, error_type=r.error_type, dlq_topic=dlq_topic)
            )
            result.dead_letters.append(r)
    return ClaimedBatch(fresh, result, dead_letters)


def repeated(ids: Sequence[Hashable], seen_before: set[Hashable]) -> set[int]:
    """Positions in `ids` of ids seen before: in `seen_before` (applied by an earlier batch) or earlier in `ids`."""
    seen, repeats = set(seen_before), set()
    for index, message_id in enumerate(ids):
        if message_id in seen:
            repeats.add(index)
        seen.add(message_id)
    return repeats
