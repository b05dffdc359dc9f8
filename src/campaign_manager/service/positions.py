"""Applies a batch of consumed position events (fills and exits reported by the broker) in one transaction.

Per batch, inside one PostgreSQL transaction:
1. lock the stored offsets of the batch's partitions and drop records already applied (redelivery, rebalance);
2. drop events whose id was already processed, before or earlier in this batch (a producer that sent twice);
3. lock every campaign the batch names, whatever its status;
4. apply the events in record order: one domain call each, one history row and one processed-message row each;
5. write campaigns, positions, history, processed messages, outbox messages (events, rejections and dead letters)
   and offsets in one statement.

A valid event that a campaign refuses (unknown campaign or position, more shares than held, campaign ended, ...)
is recorded as REJECTED and announced as `PositionEventRejected`: the message was fine, the business said no.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from campaign_manager.contracts import PositionEventMessage, PositionEventType
from campaign_manager.domain.campaign import ZERO, ZERO_CENTS, Campaign
from campaign_manager.domain.errors import RuleViolation
from campaign_manager.domain.events import AllocationNearLimit, CampaignEvent, PositionClosed
from campaign_manager.persistence.store import CampaignStore, PositionHistoryEntry, ProcessedMessage
from campaign_manager.service.batches import (
    BatchResult,
    ParsedRecord,
    RecordOutcome,
    ValidRecord,
    claim_batch,
    repeated,
)
from campaign_manager.service.changes import CampaignChanges

CAMPAIGN_NOT_FOUND = "Campaign not found"


@dataclass(frozen=True)
class PositionPolicy:
    consumer_group: str
    events_topic: str
    dlq_topic: str


def apply_position_event(
    campaign: Campaign,
    event_type: PositionEventType | str,
    position_id: UUID,
    price: Decimal,
    shares: Decimal | None,
    *,
    now: datetime,
    occurred_at: datetime,
) -> None:
    """The domain call a position event stands for. Also what `campaign-manager rebuild` replays history with.

    `shares` is required for FILLED and PARTIALLY_CLOSED (the contract checks it) and ignored otherwise: CLOSED
    and STOPPED sell whatever is held."""
    kind = PositionEventType(event_type)
    if shares is None and kind in (PositionEventType.FILLED, PositionEventType.PARTIALLY_CLOSED):
        raise RuleViolation(f"shares is required for {kind}")
    match kind:
        case PositionEventType.FILLED:
            campaign.fill_position(position_id, price, shares, now, filled_at=occurred_at)
        case PositionEventType.PARTIALLY_CLOSED:
            campaign.partially_close_position(position_id, shares, price, now)
        case PositionEventType.CLOSED:
            campaign.close_position(position_id, price, now)
        case PositionEventType.STOPPED:
            campaign.stop_position(position_id, price, now)


async def apply_position_event_batch(
    store: CampaignStore,
    topic: str,
    records: Sequence[ParsedRecord],
    policy: PositionPolicy,
    now: datetime | None = None,
) -> BatchResult:
    now = now or datetime.now(UTC)
    if not records:
        return BatchResult()

    # 1. What this batch may still apply; dead letters for what is not a valid position event.
    claimed = await claim_batch(store, topic, records, consumer_group=policy.consumer_group, dlq_topic=policy.dlq_topic)
    result, dead_letters = claimed.result, claimed.dead_letters

    # 2. Idempotency by event id, across batches and within this one.
    valid: list[ValidRecord[PositionEventMessage]] = claimed.valid()
    event_ids = [r.message.event_id for r in valid]
    duplicates = repeated(event_ids, await store.processed_message_ids(topic, set(event_ids)))

    # 3. Every campaign the batch names, locked (ended ones too: they refuse the event, and say so).
    campaigns = await store.lock_campaigns(
        {r.message.campaign_id for index, r in enumerate(valid) if index not in duplicates}
    )
    changes = CampaignChanges(policy.events_topic, now)
    changes.track(campaigns.values())
    history: list[PositionHistoryEntry] = []
    processed: list[ProcessedMessage] = []

    # 4. In record order: a campaign's events arrive on one partition, in the order they happened.
    for index, r in enumerate(valid):
        event = r.message
        if index in duplicates:
            result.outcomes.append(_outcome(event, "DUPLICATE", None, "event id already processed"))
            continue
        campaign = campaigns.get(event.campaign_id)
        try:
            if campaign is None:
                raise RuleViolation(CAMPAIGN_NOT_FOUND)
            apply_position_event(
                campaign,
                event.event_type,
                event.position_id,
                event.price,
                event.shares,
                now=now,
                occurred_at=event.occurred_at,
            )
        except RuleViolation as violation:
            changes.outbox.append(
                changes.serializer.message(
                    "PositionEventRejected",
                    key=event.campaign_id,
                    campaign=campaign,
                    causation_id=event.event_id,
                    correlation_id=event.correlation_id,
                    details={
                        "reason": violation.reason,
                        "event_id": event.event_id,
                        "event_type": event.event_type,
                        "position_id": event.position_id,
                    },
                    now=now,
                )
            )
            processed.append(ProcessedMessage(topic, event.event_id, "REJECTED", event.campaign_id, violation.reason))
            result.outcomes.append(_outcome(event, "REJECTED", campaign, violation.reason))
            continue

        events = changes.record(campaign, causation_id=event.event_id, correlation_id=event.correlation_id)
        history.append(_history_entry(event, events))
        result.allocation_warnings.extend(
            (campaign, e.total_allocation) for e in events if isinstance(e, AllocationNearLimit)
        )
        processed.append(ProcessedMessage(topic, event.event_id, "APPLIED", campaign.id, None))
        result.outcomes.append(_outcome(event, "APPLIED", campaign))

    # 5. Write everything, in one statement.
    await store.write(
        changes.batch_write(
            consumer_group=policy.consumer_group,
            topic=topic,
            next_offsets=result.next_offsets,
            outbox=dead_letters,
            position_history=history,
            processed_messages=processed,
        )
    )
    result.events_written = len(dead_letters) + len(changes.outbox)
    return result


def _history_entry(event: PositionEventMessage, events: list[CampaignEvent]) -> PositionHistoryEntry:
    """The fill or exit as it happened: shares filled, or shares sold (for CLOSED and STOPPED, all that was held)
    and the P&L of that exit alone."""
    closed = next((e for e in events if isinstance(e, PositionClosed)), None)
    if closed is None:  # FILLED, whose shares the contract requires
        shares, realized_pnl = event.shares or ZERO, ZERO_CENTS
    else:
        shares, realized_pnl = closed.shares_closed, closed.realized_pnl
    return PositionHistoryEntry(
        position_id=event.position_id,
        campaign_id=event.campaign_id,
        message_id=event.event_id,
        event_type=str(event.event_type),
        price=event.price,
        shares=shares,
        realized_pnl=realized_pnl,
        occurred_at=event.occurred_at,
    )


def _outcome(
    event: PositionEventMessage, outcome: str, campaign: Campaign | None, reason: str | None = None
) -> RecordOutcome:
    return RecordOutcome(
        message_id=event.event_id,
        outcome=outcome,
        campaign_id=campaign.id if campaign else None,
        human_campaign_id=campaign.campaign_id if campaign else None,
        correlation_id=event.correlation_id,
        kind=str(event.event_type),
        reason=reason,
    )
