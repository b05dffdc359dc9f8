"""What happened to a campaign, in the past tense. The campaign records these; the service layer turns
them into outbox messages in the same transaction as the change itself."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from campaign_manager.domain.campaign import CampaignPosition, CampaignStatus


@dataclass(frozen=True)
class CampaignCreated:
    campaign_id: UUID
    position: CampaignPosition


@dataclass(frozen=True)
class PositionAdded:
    campaign_id: UUID
    position: CampaignPosition


@dataclass(frozen=True)
class CampaignStatusChanged:
    campaign_id: UUID
    from_status: CampaignStatus
    to_status: CampaignStatus
    reason: str | None


@dataclass(frozen=True)
class AllocationNearLimit:
    """The campaign passed the warning threshold (4.5%) of its 5% budget. Logged, not published."""

    campaign_id: UUID
    total_allocation: Decimal


CampaignEvent = CampaignCreated | PositionAdded | CampaignStatusChanged | AllocationNearLimit
