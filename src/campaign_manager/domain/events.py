"""What happened to a campaign, in the past tense. The campaign records these; the service layer turns
them into outbox messages in the same transaction as the change itself.

Events that carry a `position` hold the live position object (as the campaign holds it at the end of the change);
the plain values next to it (prices, shares, P&L) are the facts of that one event and do not move afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
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
class PositionFilled:
    """The broker filled a position: the actual price and size replaced the signal's planned ones."""

    campaign_id: UUID
    position: CampaignPosition
    fill_price: Decimal
    shares: Decimal
    planned_price: Decimal
    planned_shares: Decimal
    filled_at: datetime


@dataclass(frozen=True)
class PositionClosed:
    """Shares of a position were sold: a partial close, a full close or a stop hit (`stop_hit`).

    `realized_pnl` is the P&L of this exit alone, (exit_price - entry_price) x shares_closed, to the cent;
    `fully_closed` says whether the position holds no shares any more."""

    campaign_id: UUID
    position: CampaignPosition
    shares_closed: Decimal
    exit_price: Decimal
    realized_pnl: Decimal
    fully_closed: bool
    stop_hit: bool


@dataclass(frozen=True)
class CampaignMarkedToMarket:
    """A market price moved the open positions. Recorded on every price that changed something: publishing
    every one, or only some, is the service's choice."""

    campaign_id: UUID
    price: Decimal
    unrealized_pnl: Decimal
    total_pnl: Decimal


@dataclass(frozen=True)
class CampaignInvalidated:
    """Recorded before the `CampaignStatusChanged` of the same change. `price` is the market or exit price that
    broke the level, None when the range or an operator ended the campaign; `unrealized_pnl` is that of the
    positions still open, at their last price."""

    campaign_id: UUID
    reason: str
    price: Decimal | None
    unrealized_pnl: Decimal


@dataclass(frozen=True)
class CampaignCompleted:
    """Recorded before the `CampaignStatusChanged` of the same change. `reason` is "All positions closed" when
    the last exit completed the campaign, else the operator's (None if they gave none)."""

    campaign_id: UUID
    reason: str | None
    realized_pnl: Decimal
    total_pnl: Decimal


@dataclass(frozen=True)
class CampaignStatusChanged:
    campaign_id: UUID
    from_status: CampaignStatus
    to_status: CampaignStatus
    reason: str | None


@dataclass(frozen=True)
class CampaignTotalsRebuilt:
    """A rebuild found stored totals that its positions do not add up to; `differences` maps each such field to
    (stored, recomputed)."""

    campaign_id: UUID
    differences: Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True)
class AllocationNearLimit:
    """The campaign passed the warning threshold (4.5%) of its 5% budget. Logged, not published."""

    campaign_id: UUID
    total_allocation: Decimal


CampaignEvent = (
    CampaignCreated
    | PositionAdded
    | PositionFilled
    | PositionClosed
    | CampaignMarkedToMarket
    | CampaignInvalidated
    | CampaignCompleted
    | CampaignStatusChanged
    | CampaignTotalsRebuilt
    | AllocationNearLimit
)
