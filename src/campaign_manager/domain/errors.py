"""Errors the campaign rules raise. Each carries a message a trader can read.

`RuleViolation` and its subclasses mean "this request or event is refused and the campaign is left as it was";
the service records and announces them. `InvalidStatusTransition` and `VersionMismatch` are refusals too, but of
an operator's request: the HTTP layer answers the first with 422 (naming both statuses), the second with 409.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID


class DomainError(Exception):
    """A campaign rule was broken."""


class RuleViolation(DomainError):
    """A well-formed signal breaks a business rule: it is recorded and announced as rejected, never applied."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidStatusTransition(DomainError):
    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(f"Invalid status transition: {from_status} -> {to_status}")
        self.from_status = from_status
        self.to_status = to_status


class VersionMismatch(DomainError):
    """The caller acted on a version of the campaign that is no longer the current one (HTTP 409)."""

    def __init__(self, expected: int, actual: int, campaign_id: str | None = None) -> None:
        subject = f"Campaign {campaign_id}" if campaign_id else "Campaign"
        super().__init__(f"{subject} is at version {actual}, not the expected version {expected}")
        self.expected = expected
        self.actual = actual
        self.campaign_id = campaign_id


class CampaignEnded(RuleViolation):
    """A COMPLETED or INVALIDATED campaign takes no more positions, fills, exits or prices."""

    def __init__(self, campaign_id: str, status: str, refused: str) -> None:
        super().__init__(f"Campaign {campaign_id} is {status} and {refused}")
        self.campaign_id = campaign_id
        self.status = status


class PositionNotFound(RuleViolation):
    def __init__(self, campaign_id: str, position_id: UUID) -> None:
        super().__init__(f"Position {position_id} is not part of campaign {campaign_id}")
        self.campaign_id = campaign_id
        self.position_id = position_id


class PositionAlreadyClosed(RuleViolation):
    def __init__(self, position_id: UUID) -> None:
        super().__init__(f"Position {position_id} is already CLOSED")
        self.position_id = position_id


class PositionAlreadyExited(RuleViolation):
    """A fill arrived for a position that has already sold shares: its entry can no longer be rewritten."""

    def __init__(self, position_id: UUID) -> None:
        super().__init__(f"Position {position_id} has exits already; a fill can no longer change its entry")
        self.position_id = position_id


class ExitExceedsHolding(RuleViolation):
    def __init__(self, position_id: UUID, requested: Decimal, held: Decimal) -> None:
        super().__init__(f"Cannot close {requested:f} shares of position {position_id}: only {held:f} held")
        self.position_id = position_id
        self.requested = requested
        self.held = held


class FillAtOrBelowStop(RuleViolation):
    def __init__(self, position_id: UUID, fill_price: Decimal, stop_loss: Decimal) -> None:
        super().__init__(f"Fill price {fill_price:f} of position {position_id} is not above its stop {stop_loss:f}")
        self.position_id = position_id
        self.fill_price = fill_price
        self.stop_loss = stop_loss


class NotPositive(RuleViolation):
    """A price or a number of shares that must be greater than zero was not."""

    def __init__(self, name: str, value: Decimal) -> None:
        super().__init__(f"{name} must be greater than 0, got {value:f}")
        self.name = name
        self.value = value


class ReasonRequired(RuleViolation):
    def __init__(self, action: str) -> None:
        super().__init__(f"{action} needs a reason")
        self.action = action


class AmountOutOfRange(RuleViolation):
    """An amount of money the rules computed is too large to record (NUMERIC(12,2)): refused, not failed."""

    def __init__(self, name: str, value: Decimal, limit: Decimal) -> None:
        super().__init__(f"{name} {value:f} is beyond the largest amount a campaign records (±{limit:f})")
        self.name = name
        self.value = value
