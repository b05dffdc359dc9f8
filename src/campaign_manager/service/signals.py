"""Applies a batch of consumed trade signals in one transaction.

Per batch, inside one PostgreSQL transaction:
1. lock the stored offsets of the batch's partitions and drop records already applied (redelivery, rebalance);
2. drop signals whose id was already processed (a producer that sent twice);
3. lock the portfolios the batch adds risk to and read their open risk (the 10% heat limit);
4. lock the open campaign of every (portfolio, range) the batch touches; open or join campaigns in record order;
5. write ranges, campaigns, positions, processed signals, outbox messages (events and dead letters) and offsets.
Nothing is visible, published or committed to Kafka before that transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from campaign_manager.contracts import DocumentCache, ReceivedSignal
from campaign_manager.domain.campaign import (
    ZERO,
    Campaign,
    CampaignPosition,
    check_portfolio_heat,
    check_trade_risk,
    human_campaign_id,
)
from campaign_manager.domain.errors import RuleViolation
from campaign_manager.domain.events import AllocationNearLimit, CampaignCreated, PositionAdded
from campaign_manager.persistence.store import BatchWrite, CampaignStore, ProcessedSignal, SignalBatchKeys
from campaign_manager.service.batches import (
    BatchResult,
    ParsedRecord,
    RecordOutcome,
    ValidRecord,
    claim,
    repeated,
)
from campaign_manager.service.outgoing import EventSerializer


@dataclass(frozen=True)
class SignalPolicy:
    consumer_group: str
    events_topic: str
    dlq_topic: str
    default_portfolio_value: Decimal | None


async def apply_signal_batch(
    store: CampaignStore,
    topic: str,
    records: Sequence[ParsedRecord],
    policy: SignalPolicy,
    now: datetime | None = None,
) -> BatchResult:
    now = now or datetime.now(UTC)
    if not records:
        return BatchResult()

    # 1-4 in one round trip. Keys are those of every valid record, including any already applied: locking a few
    # rows more on a redelivery is cheaper than a second round trip to learn which.
    entries = [r.message.entry for r in records if isinstance(r, ValidRecord)]
    state = await store.signal_batch_state(
        policy.consumer_group,
        topic,
        SignalBatchKeys(
            partitions={r.record.partition for r in records},
            signal_ids={e.id for e in entries},
            portfolio_ids={e.portfolio_id for e in entries},
            campaign_keys={(e.portfolio_id, e.trading_range.id) for e in entries},
            human_id_bases={human_campaign_id(e.symbol, e.trading_range.start_time, ()) for e in entries},
            range_ids={e.trading_range.id for e in entries},
        ),
    )
    # 1. What this batch may still apply; dead letters for what is not a valid signal.
    claimed = claim(records, state.stored_offsets, dlq_topic=policy.dlq_topic)
    result, outbox = claimed.result, claimed.dead_letters
    # 2. Idempotency by signal id, across batches and within this one.
    valid: list[ValidRecord[ReceivedSignal]] = claimed.valid()
    duplicates = repeated([r.message.id for r in valid], state.processed_signal_ids)
    # 3. Open risk of every portfolio the batch adds to, its row locked: workers racing signals of one portfolio
    #    judge the 10% heat limit one after the other, while other portfolios never wait on them.
    open_risk = state.open_risk
    # 4. Current state of every campaign the batch touches, locked; human ids taken; ranges invalidated (read after
    #    the campaign locks: an invalidation that held one of them has committed by now, and is seen).
    campaigns = state.open_campaigns
    loaded_versions = {c.id: c.version for c in campaigns.values()}
    taken_ids = state.taken_campaign_ids
    invalidated_ranges = state.invalidated_ranges

    documents = DocumentCache()
    serializer = EventSerializer(policy.events_topic, documents)
    created: dict[UUID, Campaign] = {}
    changed: dict[UUID, Campaign] = {}
    new_positions: list[tuple[UUID, CampaignPosition]] = []
    processed: list[ProcessedSignal] = []
    entry_signals = []

    for index, r in enumerate(valid):
        if index in duplicates:
            result.outcomes.append(_outcome(r.message, "DUPLICATE", None, "signal id already processed"))
            continue
        signal = r.message.entry_signal(policy.default_portfolio_value)
        entry_signals.append(signal)
        key = (signal.portfolio_id, signal.trading_range.id)
        campaign = campaigns.get(key)
        risk_before = campaign.current_risk if campaign is not None and campaign.is_open else ZERO
        try:
            if (broken := invalidated_ranges.get(signal.trading_range.id)) is not None:
                raise RuleViolation(f"Trading range invalidated: {broken}")
            portfolio_value = check_trade_risk(signal)
            check_portfolio_heat(open_risk[signal.portfolio_id], signal.risk_amount, portfolio_value)
            if campaign is None or not campaign.is_open:
                human_id = human_campaign_id(signal.symbol, signal.trading_range.start_time, taken_ids)
                campaign = Campaign.open(signal, human_id, now)
                taken_ids.add(human_id)
                campaigns[key] = created[campaign.id] = campaign
                outcome = "CREATED"
            else:
                campaign.add_position(signal, now)
                if campaign.id not in created:
                    changed[campaign.id] = campaign
                outcome = "ADDED"
        except RuleViolation as violation:
            outbox.append(
                serializer.rejection(
                    reason=violation.reason,
                    signal_id=signal.id,
                    pattern_type=str(signal.pattern_type),
                    portfolio_id=signal.portfolio_id,
                    trading_range_id=signal.trading_range.id,
                    campaign=campaign,
                    correlation_id=r.message.correlation_id,
                    now=now,
                )
            )
            processed.append(_processed(r, "REJECTED", campaign.id if campaign else None, violation.reason))
            result.outcomes.append(_outcome(r.message, "REJECTED", campaign, violation.reason))
            continue

        open_risk[signal.portfolio_id] += campaign.current_risk - risk_before
        events = campaign.collect_events()
        for event in events:
            if isinstance(event, CampaignCreated | PositionAdded):
                new_positions.append((campaign.id, event.position))
            elif isinstance(event, AllocationNearLimit):
                result.allocation_warnings.append((campaign, event.total_allocation))
        outbox.extend(
            serializer.campaign_events(
                events, campaign, causation_id=signal.id, correlation_id=r.message.correlation_id, now=now
            )
        )
        processed.append(_processed(r, outcome, campaign.id, None))
        result.outcomes.append(_outcome(r.message, outcome, campaign))

    # 5. Write everything, in one statement.
    await store.write(
        BatchWrite(
            consumer_group=policy.consumer_group,
            topic=topic,
            next_offsets=result.next_offsets,
            trading_ranges=[s.trading_range for s in entry_signals],
            new_campaigns=created.values(),
            changed_campaigns=changed.values(),
            loaded_versions=loaded_versions,
            processed=processed,
            positions=new_positions,
            outbox=outbox,
            documents=documents,
        )
    )
    result.events_written = len(outbox)
    return result


def _processed(
    r: ValidRecord[ReceivedSignal], outcome: str, campaign_id: UUID | None, reason: str | None
) -> ProcessedSignal:
    return ProcessedSignal(
        signal_id=r.message.id,
        outcome=outcome,
        campaign_id=campaign_id,
        reason=reason,
        source_topic=r.record.topic,
        source_partition=r.record.partition,
        source_offset=r.record.offset,
    )


def _outcome(
    message: ReceivedSignal, outcome: str, campaign: Campaign | None, reason: str | None = None
) -> RecordOutcome:
    return RecordOutcome(
        message_id=message.id,
        outcome=outcome,
        campaign_id=campaign.id if campaign else None,
        human_campaign_id=campaign.campaign_id if campaign else None,
        correlation_id=message.correlation_id,
        kind=str(message.entry.pattern_type),
        reason=reason,
    )
