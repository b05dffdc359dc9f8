"""An operator changes a campaign's status: one request, one unit of work.

In one PostgreSQL transaction: lock the campaign, check the version the operator saw, let the domain make the change
(`operator_change_status`), and write the campaign with its events (CampaignCompleted or CampaignInvalidated, and
CampaignStatusChanged) to the outbox. The events have no causation id (no message caused them) and the request's
correlation id.

Two operators acting on the same version: the second waits for the first's lock, then finds the campaign at a
later version and is refused (`VersionMismatch`, HTTP 409), so exactly one change is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from campaign_manager.domain.campaign import Campaign, CampaignStatus, TradingRange, WyckoffPhase
from campaign_manager.domain.errors import VersionMismatch
from campaign_manager.persistence.store import Database, TradingRangeState, VersionConflict
from campaign_manager.service.changes import CampaignChanges

# The store's write also advances consumed offsets; an operator's write consumes nothing, so it names this group
# and topic with no partitions (the offsets part of the statement matches no row).
OPERATOR_WRITER = "operator"


class CampaignNotFound(Exception):
    def __init__(self, reference: str) -> None:
        super().__init__(f"Campaign {reference!r} not found")
        self.reference = reference


@dataclass(frozen=True)
class StatusChange:
    """What the operator asked for. `expected_version` is the version they saw (HTTP 409 if it moved on)."""

    campaign: str  # UUID or human id
    to_status: CampaignStatus
    expected_version: int
    reason: str | None
    correlation_id: str


@dataclass(frozen=True)
class ChangedCampaign:
    campaign: Campaign
    trading_range: TradingRange | None


async def change_campaign_status(
    database: Database, change: StatusChange, *, events_topic: str, now: datetime | None = None
) -> ChangedCampaign:
    """Raises CampaignNotFound, VersionMismatch, InvalidStatusTransition or a RuleViolation; changes nothing then."""
    now = now or datetime.now(UTC)
    campaign_uuid: UUID | None = None
    try:
        async with database.transaction() as store:
            campaign_uuid = await store.campaign_uuid(change.campaign)
            campaign = (await store.lock_campaigns([campaign_uuid])).get(campaign_uuid) if campaign_uuid else None
            if campaign is None:
                raise CampaignNotFound(change.campaign)
            campaign.check_version(change.expected_version)

            changes = CampaignChanges(events_topic, now)
            changes.track([campaign])
            campaign.operator_change_status(change.to_status, now, change.reason)
            changes.record(campaign, causation_id=None, correlation_id=change.correlation_id)
            ranges = await store.trading_ranges([campaign.trading_range_id])
            await store.write(
                changes.batch_write(consumer_group=OPERATOR_WRITER, topic=OPERATOR_WRITER, next_offsets={})
            )
    except VersionConflict:
        # Not reached while every writer locks the campaign first; should one not, a lost race is a stale version.
        assert campaign_uuid is not None
        raise VersionMismatch(
            change.expected_version, await _current_version(database, campaign_uuid), change.campaign
        ) from None
    state = ranges.get(campaign.trading_range_id)
    return ChangedCampaign(campaign, _trading_range(state) if state else None)


async def _current_version(database: Database, campaign_uuid: UUID) -> int:
    async with database.transaction() as store:
        found = await store.lock_campaigns([campaign_uuid])
    return found[campaign_uuid].version


def _trading_range(state: TradingRangeState) -> TradingRange:
    return TradingRange(
        id=state.id,
        symbol=state.symbol,
        timeframe=state.timeframe,
        start_time=state.start_time,
        creek=state.creek,
        ice=state.ice,
        jump=state.jump,
        phase=WyckoffPhase(state.phase),
    )
