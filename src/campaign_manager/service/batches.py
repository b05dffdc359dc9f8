"""What every consumed batch shares, whatever its topic: parsed records, the offsets it may still apply, the dead
letters of records that are not valid messages, and what it did.

Each topic's handler (`signals.py`, `positions.py`, `prices.py`, `ranges.py`) applies one batch in one
transaction: `claim_fresh_records` first, then its own reads, domain calls and one `CampaignStore.write`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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
    skipped_already_applied: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)
    events_written: int = 0


# Applies one batch of one topic inside the unit of work's transaction.
ApplyBatch = Callable[[CampaignStore, str, Sequence[ParsedRecord]], Awaitable[BatchResult]]


@dataclass
class ClaimedBatch:
    """The records of a batch not applied yet, and the offsets the batch advances."""

    fresh: list[ParsedRecord]
    next_offsets: dict[int, int]
    skipped: int

    def valid(self) -> list[ValidRecord[Any]]:
        return [r for r in self.fresh if isinstance(r, ValidRecord)]

    def dead_letters(self, dlq_topic: str, result: BatchResult) -> list[OutboxMessage]:
        """Outbox messages for the fresh records that are not valid messages; noted in `result`."""
        letters = []
        for r in self.fresh:
            if isinstance(r, InvalidRecord):
                letters.append(
                    dead_letter_message(r.record, reason=r.reason, error_type=r.error_type, dlq_topic=dlq_topic)
                )
                result.dead_letters.append(r)
        return letters


async def claim_fresh_records(
    store: CampaignStore, group: str, topic: str, records: Sequence[ParsedRecord]
) -> ClaimedBatch:
    """Lock the stored offsets of the batch's partitions and drop what was already applied.

    Stored offsets are the truth, Kafka's only a hint: after a rebalance or a redelivery, records below the stored
    offset were applied by this or another consumer and must change nothing."""
    stored = await store.lock_offsets(group, topic, {r.record.partition for r in records})
    fresh = [r for r in records if r.record.offset >= stored[r.record.partition]]
    next_offsets: dict[int, int] = {}
    for r in records:
        partition = r.record.partition
        next_offsets[partition] = max(next_offsets.get(partition, stored[partition]), r.record.offset + 1)
    return ClaimedBatch(fresh, next_offsets, len(records) - len(fresh))
