"""Applies a batch of consumed trading-range events in one transaction.

Per batch, inside one PostgreSQL transaction:
1. lock the stored offsets of the batch's partitions and drop records already applied; dead letters for records
   that are not valid range events;
2. drop events whose id was already processed (redelivered, or sent twice);
3. lock the ranges, then the open campaigns (of every portfolio) of the ranges the batch invalidates;
4. apply the events in record order: RANGE_UPDATED stores the range's levels and phase; RANGE_INVALIDATED stores
   them too, marks the range INVALIDATED with its reason and invalidates each open campaign of the range
   (CampaignInvalidated and CampaignStatusChanged, caused by the range event);
5. write range states, campaigns, processed event ids, outbox messages and offsets in one statement.

An invalidated range stays invalidated. The range broke: a later RANGE_UPDATED still stores the levels it carries,
but does not make the range ACTIVE again, and signals in it are rejected ("Trading range invalidated: <reason>",
in service/signals.py). A second RANGE_INVALIDATED keeps the first reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from campaign_manager.contracts import TradingRangeEventMessage, TradingRangeEventType
from campaign_manager.domain.campaign import Campaign
from campaign_manager.persistence.store import CampaignStore, ProcessedMessage, TradingRangeState
from campaign_manager.service.batches import (
    BatchResult,
    ParsedRecord,
    RecordOutcome,
    ValidRecord,
    claim_batch,
    repeated,
)
from campaign_manager.service.changes import CampaignChanges

ACTIVE = "ACTIVE"
INVALIDATED = "INVALIDATED"
APPLIED = "APPLIED"
DUPLICATE = "DUPLICATE"


@dataclass(frozen=True)
class RangePolicy:
    consumer_group: str
    events_topic: str
    dlq_topic: str


async def apply_range_batch(
    store: CampaignStore,
    topic: str,
    records: Sequence[ParsedRecord],
    policy: RangePolicy,
    now: datetime | None = None,
) -> BatchResult:
    now = now or datetime.now(UTC)
    if not records:
        return BatchResult()

    # 1. What this batch may still apply; dead letters for what is not a valid range event.
    claimed = await claim_batch(store, topic, records, consumer_group=policy.consumer_group, dlq_topic=policy.dlq_topic)
    result, dead_letters = claimed.result, claimed.dead_letters

    # 2. Idempotency by event id, across batches and within this one.
    valid: list[ValidRecord[TradingRangeEventMessage]] = claimed.valid()
    event_ids = [r.message.event_id for r in valid]
    duplicates = repeated(event_ids, await store.processed_message_ids(topic, set(event_ids)))
    to_apply = [r.message for index, r in enumerate(valid) if index not in duplicates]

    # 3. Ranges first, then their open campaigns, read after the lock is held: a signal batch opening a campaign
    #    in one of these ranges either committed before (its campaign is found here and invalidated) or waits on
    #    the range lock in its write, then sees the range invalidated and is retried (its signal rejected).
    states = await store.trading_ranges({e.trading_range.id for e in to_apply}, lock=True)
    broken = {e.trading_range.id for e in to_apply if e.event_type == TradingRangeEventType.RANGE_INVALIDATED}
    open_campaigns: dict[UUID, list[Campaign]] = {}
    for campaign in await store.lock_open_campaigns_of_ranges(broken):
        open_campaigns.setdefault(campaign.trading_range_id, []).append(campaign)

    # 4. Every event in record order.
    changes = CampaignChanges(policy.events_topic, now)
    changes.track(c for campaigns in open_campaigns.values() for c in campaigns)
    processed: list[ProcessedMessage] = []
    for index, r in enumerate(valid):
        event = r.message
        if index in duplicates:
            result.outcomes.append(_outcome(event, DUPLICATE, [], "event id already processed"))
            continue
        state = states[event.trading_range.id] = _next_state(states.get(event.trading_range.id), event)
        invalidated: list[Campaign] = []
        if event.event_type == TradingRangeEventType.RANGE_INVALIDATED:
            reason = event.reason or state.invalidation_reason or ""  # the contract requires a reason
            for campaign in open_campaigns.pop(state.id, []):
                campaign.invalidate(reason, now)
                changes.record(campaign, causation_id=event.event_id, correlation_id=event.correlation_id)
                invalidated.append(campaign)
        processed.append(
            ProcessedMessage(
                topic=topic,
                message_id=event.event_id,
                outcome=APPLIED,
                campaign_id=invalidated[0].id if len(invalidated) == 1 else None,
                reason=event.reason,
            )
        )
        result.outcomes.append(_outcome(event, APPLIED, invalidated, event.reason))

    # 5. Write everything, in one statement.
    await store.write(
        changes.batch_write(
            consumer_group=policy.consumer_group,
            topic=topic,
            next_offsets=result.next_offsets,
            outbox=dead_letters,
            range_events=list(states.values()),
            processed_messages=processed,
        )
    )
    result.events_written = len(dead_letters) + len(changes.outbox)
    return result


def _next_state(current: TradingRangeState | None, event: TradingRangeEventMessage) -> TradingRangeState:
    """The range as this event leaves it: the event's levels and phase; INVALIDATED once invalidated."""
    if current is not None and current.status == INVALIDATED:
        status, reason = INVALIDATED, current.invalidation_reason
    elif event.event_type == TradingRangeEventType.RANGE_INVALIDATED:
        status, reason = INVALIDATED, event.reason
    else:
        status, reason = ACTIVE, None
    levels = event.trading_range
    return TradingRangeState(
        id=levels.id,
        # Identity stays as first stored (the write updates levels, phase and status only).
        symbol=current.symbol if current else levels.symbol,
        timeframe=current.timeframe if current else levels.timeframe,
        start_time=current.start_time if current else levels.start_time,
        creek=levels.creek,
        ice=levels.ice,
        jump=levels.jump,
        phase=str(levels.phase),
        status=status,
        invalidation_reason=reason,
    )


def _outcome(
    event: TradingRangeEventMessage, outcome: str, invalidated: list[Campaign], reason: str | None
) -> RecordOutcome:
    return RecordOutcome(
        message_id=event.event_id,
        outcome=outcome,
        campaign_id=invalidated[0].id if len(invalidated) == 1 else None,
        # Every campaign the event invalidated, for the log line.
        human_campaign_id=", ".join(c.campaign_id for c in invalidated) or None,
        correlation_id=event.correlation_id,
        kind=str(event.event_type),
        reason=reason,
    )
