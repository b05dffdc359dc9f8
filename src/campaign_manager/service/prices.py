"""Applies a batch of consumed market prices in one transaction: stop breaks at once, marks at a bounded rate.

Ticks arrive far faster than campaigns change, so a batch is first coalesced per symbol (`coalesce`):
- the LOWEST price, with its time: a dip through a stop inside the batch invalidates the campaign even when the
  price recovered before the batch ended;
- the LATEST price (by the tick's time, then its offset): what open positions are marked to.

Then, inside one PostgreSQL transaction:
1. lock the stored offsets of the batch's partitions and drop records already applied. Prices carry no id: the
   stored offsets alone make a batch apply once (and a price applied twice would change nothing);
2. look at the open campaigns of the batch's symbols (not loaded, not locked: ids, last marks, highest open
   stops) and lock and load only those the batch may change: the lowest price is at or below one of their open
   stops, or their last mark is older than the interval;
3. a campaign whose invalidation level the lowest price reached is marked to market at that price, which
   invalidates it (CampaignInvalidated, CampaignStatusChanged), and is written now. Any other campaign is marked
   to the latest price only when it is due: one write per campaign per interval, whatever the tick rate. The
   others are not written at all; their price waits for their next due mark;
4. write the changed campaigns and positions, their events, the dead letters and the offsets, in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from campaign_manager.domain.campaign import Campaign
from campaign_manager.domain.errors import RuleViolation
from campaign_manager.domain.events import CampaignMarkedToMarket
from campaign_manager.persistence.store import CampaignStore
from campaign_manager.service.batches import BatchResult, ParsedRecord, RecordOutcome, claim_batch
from campaign_manager.service.changes import CampaignChanges


@dataclass(frozen=True)
class PricePolicy:
    consumer_group: str
    events_topic: str
    dlq_topic: str
    # A campaign's price is written at most once per interval; a stop break is written at once.
    mark_to_market_interval: timedelta


class PriceTick(NamedTuple):
    """A `market-prices` record's value once checked against `MarketPriceMessage`: what the handler takes.

    A tuple, not the pydantic model: tens of thousands arrive a second, and building a model costs more than
    parsing the record (see messaging/price_parsing.py)."""

    symbol: str
    price: Decimal
    time: datetime  # UTC


@dataclass(frozen=True)
class SymbolPrices:
    """A batch's ticks of one symbol, coalesced."""

    lowest: Decimal
    lowest_at: datetime
    latest: Decimal
    latest_at: datetime


def coalesce(ticks: Iterable[PriceTick]) -> dict[str, SymbolPrices]:
    """Per symbol, the lowest price (the first tick at it) and the latest (by time; of equal times, the later
    tick). `ticks` come in the order consumed, which within a partition is offset order."""
    lowest: dict[str, PriceTick] = {}
    latest: dict[str, PriceTick] = {}
    for tick in ticks:
        low = lowest.get(tick.symbol)
        if low is None:
            lowest[tick.symbol] = latest[tick.symbol] = tick
            continue
        if tick.price < low.price:
            lowest[tick.symbol] = tick
        if tick.time >= latest[tick.symbol].time:
            latest[tick.symbol] = tick
    return {
        symbol: SymbolPrices(low.price, low.time, latest[symbol].price, latest[symbol].time)
        for symbol, low in lowest.items()
    }


async def apply_price_batch(
    store: CampaignStore,
    topic: str,
    records: Sequence[ParsedRecord],
    policy: PricePolicy,
    now: datetime | None = None,
) -> BatchResult:
    now = now or datetime.now(UTC)
    if not records:
        return BatchResult()

    # 1. What this batch may still apply; dead letters for what is not a valid price.
    claimed = await claim_batch(store, topic, records, consumer_group=policy.consumer_group, dlq_topic=policy.dlq_topic)
    result, dead_letters = claimed.result, claimed.dead_letters
    prices = coalesce(r.message for r in claimed.valid())

    # 2. Which open campaigns of those symbols the prices may change: those the lowest price may break and those
    # due a mark. Only these are loaded and locked; most batches change none.
    due_if_marked_before = now - policy.mark_to_market_interval
    due: set[UUID] = set()
    candidates: list[UUID] = []
    for stops in await store.open_campaign_stops(prices):
        if stops.marked_to_market_at is None or stops.marked_to_market_at <= due_if_marked_before:
            due.add(stops.campaign_id)
        may_break = stops.highest_open_stop is not None and prices[stops.symbol].lowest <= stops.highest_open_stop
        if may_break or stops.campaign_id in due:
            candidates.append(stops.campaign_id)
    locked = await store.lock_campaigns(candidates)
    changes = CampaignChanges(policy.events_topic, now)
    changes.track(locked.values())

    # 3. Stop breaks now; marks when due.
    marked_at: dict[UUID, datetime] = {}
    for campaign in locked.values():
        if not campaign.is_open:  # ended since it was looked at
            continue
        symbol, is_due = prices[campaign.symbol], campaign.id in due
        level = campaign.invalidation_level()
        breaks = level is not None and symbol.lowest <= level[0]
        price = symbol.lowest if breaks else symbol.latest
        try:
            if breaks:
                campaign.mark_to_market(price, now)  # invalidates it
            elif not (is_due and campaign.mark_to_market(price, now)):
                continue
        except RuleViolation as violation:
            # A price the campaign cannot take (its P&L could not be recorded): the campaign stays as it was and
            # the next price marks it. The tick is valid by its contract, so it is refused in the log, not
            # dead-lettered; a stop break needs no such price, so none is missed.
            result.refused_prices.append((campaign, price, violation.reason))
            result.outcomes.append(_price_outcome(campaign, "REJECTED", violation.reason))
            continue
        events = changes.record(
            campaign, causation_id=None, correlation_id=None, unpublished=() if is_due else (CampaignMarkedToMarket,)
        )
        if is_due and any(isinstance(event, CampaignMarkedToMarket) for event in events):
            marked_at[campaign.id] = now
        # reason: "Spring low break" / "Stop level break"; None for a mark
        result.outcomes.append(_price_outcome(campaign, "APPLIED", campaign.invalidation_reason))

    # 4. Write everything, in one statement.
    write = changes.batch_write(
        consumer_group=policy.consumer_group,
        topic=topic,
        next_offsets=result.next_offsets,
        outbox=dead_letters,
        marked_to_market_at=marked_at,
    )
    await store.write(write)
    result.events_written = len(dead_letters) + len(changes.outbox)
    return result


def _price_outcome(campaign: Campaign, outcome: str, reason: str | None) -> RecordOutcome:
    return RecordOutcome(
        message_id=None,
        outcome=outcome,
        campaign_id=campaign.id,
        human_campaign_id=campaign.campaign_id,
        correlation_id=None,
        kind="PRICE",
        reason=reason,
    )
