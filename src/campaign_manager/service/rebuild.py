"""`campaign-manager rebuild`: recompute every campaign from what it was built of, and report where the stored
figures disagree. It changes nothing.

Each position is replayed from its entry through its history (`position_history`: the fills and exits in the order
they were applied) with the very domain calls the position-events consumer made (`apply_position_event`), on a
scratch campaign holding that position alone; the campaign's totals are then derived from the replayed positions
by the domain (`recompute_totals`).

What the history cannot tell is taken as stored:
- the entry before any fill: the signal's plan (price, size, risk and allocation), which the position keeps until a
  fill replaces it;
- each position's last market price (`current_price`): prices are not history. Its unrealized P&L is recomputed.
- times of processing (`closed_at`, `updated_at`), which are when the worker ran, not when the broker acted.

Campaigns are read a page at a time in id order, so the memory used does not grow with the number of campaigns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from campaign_manager.domain.campaign import (
    ZERO_CENTS,
    Campaign,
    CampaignPosition,
    CampaignStatus,
    PositionStatus,
    recompute_totals,
)
from campaign_manager.domain.errors import RuleViolation
from campaign_manager.persistence.store import Database, PositionHistoryEntry
from campaign_manager.service.positions import apply_position_event

PAGE_SIZE = 500  # campaigns per read: a few megabytes at most, whatever the table holds

# What a position's entry and history determine, compared with what is stored.
REPLAYED_POSITION_FIELDS = (
    "entry_date",
    "entry_price",
    "entry_shares",
    "shares",
    "status",
    "risk_amount",
    "allocation_percent",
    "current_pnl",
    "realized_pnl",
    "exit_price",
    "filled_at",
)


@dataclass(frozen=True)
class Difference:
    """A stored figure that the replay does not arrive at. `field` is a campaign total (`realized_pnl`), a
    position's field (`positions[<position id>].shares`), or `positions[<position id>].history` when the history
    itself cannot be replayed."""

    campaign_id: str  # the human id, e.g. AAPL-2024-10-15
    field: str
    stored: Any
    recomputed: Any


class HistoryNotReplayable(Exception):
    def __init__(self, entry: PositionHistoryEntry, reason: str) -> None:
        super().__init__(f"{entry.event_type} {entry.message_id} refused: {reason}")
        self.entry = entry
        self.reason = reason


def replay_position(
    campaign: Campaign, position: CampaignPosition, history: Sequence[PositionHistoryEntry]
) -> CampaignPosition:
    """The position as its entry and its history make it, keeping its stored last market price.

    Raises HistoryNotReplayable when an entry of the history is one the domain refuses."""
    fresh = CampaignPosition(
        position_id=position.position_id,
        signal_id=position.signal_id,
        pattern_type=position.pattern_type,
        entry_date=position.entry_date,
        entry_price=position.entry_price,
        shares=position.entry_shares,
        stop_loss=position.stop_loss,
        target_price=position.target_price,
        current_price=position.entry_price,
        current_pnl=ZERO_CENTS,
        status=PositionStatus.OPEN,
        allocation_percent=position.allocation_percent,
        risk_amount=position.risk_amount,
        created_at=position.created_at,
        updated_at=position.created_at,
        entry_shares=position.entry_shares,
    )
    # Open, holding this position alone: whatever became of the real campaign later, each entry of the history was
    # accepted when it came, and the other positions' rules were judged then.
    scratch = dataclasses.replace(campaign, positions=[fresh], status=CampaignStatus.ACTIVE, events=[])
    for entry in history:
        try:
            apply_position_event(
                scratch,
                entry.event_type,
                entry.position_id,
                entry.price,
                entry.shares,
                now=entry.occurred_at,
                occurred_at=entry.occurred_at,
            )
        except RuleViolation as refused:
            raise HistoryNotReplayable(entry, refused.reason) from refused
    fresh.current_price = position.current_price
    fresh.current_pnl = fresh.unrealized_pnl_at(fresh.current_price)
    return fresh


def check_campaign(campaign: Campaign, history: Mapping[UUID, Sequence[PositionHistoryEntry]]) -> list[Difference]:
    """Every stored figure of the campaign and its positions that its positions' history does not arrive at."""
    differences = []
    replayed = []
    for position in campaign.positions:
        label = f"positions[{position.position_id}]"
        try:
            fresh = replay_position(campaign, position, history.get(position.position_id, ()))
        except HistoryNotReplayable as error:
            entry = error.entry
            differences.append(
                Difference(
                    campaign.campaign_id,
                    f"{label}.history",
                    f"{entry.event_type} {entry.message_id} at {entry.occurred_at.isoformat()}",
                    f"refused: {error.reason}",
                )
            )
            replayed.append(position)  # the totals are still checked against the position as stored
            continue
        for name in REPLAYED_POSITION_FIELDS:
            stored, recomputed = getattr(position, name), getattr(fresh, name)
            if stored != recomputed:
                differences.append(Difference(campaign.campaign_id, f"{label}.{name}", stored, recomputed))
        replayed.append(fresh)
    rebuilt = dataclasses.replace(campaign, positions=replayed, events=[])
    for name, (stored, recomputed) in recompute_totals(rebuilt).items():
        differences.append(Difference(campaign.campaign_id, name, stored, recomputed))
    return differences


@dataclass
class RebuildSummary:
    campaigns: int = 0
    positions: int = 0
    history_entries: int = 0
    differences: int = 0
    campaigns_with_differences: int = 0

    def line(self) -> str:
        checked = (
            f"{_count(self.campaigns, 'campaign')}, {_count(self.positions, 'position')} and"
            f" {_count(self.history_entries, 'fill or exit', 'fills and exits')} replayed"
        )
        if not self.differences:
            return f"{checked}: every stored figure matches"
        return (
            f"{checked}: {_count(self.differences, 'difference')}"
            f" in {_count(self.campaigns_with_differences, 'campaign')}"
        )


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number:,} {singular if number == 1 else plural or singular + 's'}"


async def check_all_campaigns(
    database: Database, report: Callable[[Difference], None], page_size: int = PAGE_SIZE
) -> RebuildSummary:
    """Replays every campaign, a page at a time, and reports each difference as it is found."""
    summary = RebuildSummary()
    after = UUID(int=0)  # below every campaign id
    while True:
        # One snapshot per page: campaigns, positions and history come from three statements, and a worker committing
        # between them would otherwise show a campaign half-way through a change.
        async with database.transaction(isolation="repeatable_read", readonly=True) as store:
            campaigns = await store.campaigns_after(after, page_size)
            history = await store.position_history([p.position_id for c in campaigns for p in c.positions])
        if not campaigns:
            return summary
        for campaign in campaigns:
            differences = check_campaign(campaign, history)
            summary.campaigns += 1
            summary.positions += len(campaign.positions)
            summary.history_entries += sum(len(history.get(p.position_id, ())) for p in campaign.positions)
            if differences:
                summary.campaigns_with_differences += 1
                summary.differences += len(differences)
                for difference in differences:
                    report(difference)
        after = campaigns[-1].id
