"""Turns what happened into outbox messages: campaign events for `campaign-events`, dead letters for `*.dlq`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from campaign_manager.contracts import SCHEMA_VERSION, DocumentCache, to_json
from campaign_manager.domain.campaign import Campaign
from campaign_manager.domain.events import (
    CampaignCompleted,
    CampaignCreated,
    CampaignInvalidated,
    CampaignMarkedToMarket,
    CampaignStatusChanged,
    PositionAdded,
    PositionClosed,
    PositionFilled,
)
from campaign_manager.domain.ids import new_id
from campaign_manager.persistence.store import OutboxMessage
from campaign_manager.service.records import ConsumedRecord


class EventSerializer:
    """Writes campaign events as `CampaignEventMessage` describes them (tests hold the two together).

    Campaign snapshots and positions come from the unit of work's `DocumentCache`, so each is encoded once."""

    def __init__(self, topic: str, documents: DocumentCache) -> None:
        self.topic = topic
        self.documents = documents

    def message(
        self,
        event_type: str,
        *,
        key: UUID,
        campaign: Campaign | None,
        causation_id: UUID | None,
        correlation_id: str | None,
        details: dict | bytes,
        now: datetime,
    ) -> OutboxMessage:
        event_id = new_id()
        envelope = to_json(
            {
                "event_id": event_id,
                "event_type": event_type,
                "schema_version": SCHEMA_VERSION,
                "occurred_at": now,
                "campaign_version": campaign.version if campaign else None,
                "causation_id": causation_id,
                "correlation_id": correlation_id,
            }
        )
        campaign_json = self.documents.snapshot(campaign) if campaign else b"null"
        details_json = details if isinstance(details, bytes) else to_json(details)
        return OutboxMessage(
            topic=self.topic,
            key=str(key).encode(),
            payload=envelope[:-1] + b',"campaign":' + campaign_json + b',"details":' + details_json + b"}",
            event_id=event_id,
            event_type=event_type,
            occurred_at=now,
            aggregate_id=campaign.id if campaign else None,
        )

    def campaign_events(
        self,
        events: list,
        campaign: Campaign,
        *,
        causation_id: UUID | None,
        correlation_id: str | None,
        now: datetime,
    ) -> list[OutboxMessage]:
        """One message per published domain event, each carrying the campaign as it is now."""
        common = {
            "key": campaign.id,
            "campaign": campaign,
            "causation_id": causation_id,
            "correlation_id": correlation_id,
            "now": now,
        }
        messages = []
        for event in events:
            if (published := self._published(event)) is not None:
                event_type, details = published
                messages.append(self.message(event_type, details=details, **common))
        return messages

    def _published(self, event: object) -> tuple[str, dict | bytes] | None:
        """(event type, details) of a domain event that goes out on `campaign-events`; None for the others
        (AllocationNearLimit is a log line, CampaignTotalsRebuilt a report)."""
        match event:
            case CampaignCreated() | PositionAdded():
                return type(event).__name__, b'{"position":' + self.documents.position(event.position) + b"}"
            case CampaignStatusChanged():
                return "CampaignStatusChanged", {
                    "from_status": event.from_status,
                    "to_status": event.to_status,
                    "reason": event.reason,
                }
            case PositionFilled():
                position = self.documents.position(event.position)
                rest = to_json(
                    {
                        "fill_price": event.fill_price,
                        "shares": event.shares,
                        "planned_price": event.planned_price,
                        "planned_shares": event.planned_shares,
                        "filled_at": event.filled_at,
                    }
                )
                return "PositionFilled", b'{"position":' + position + b"," + rest[1:]
            case PositionClosed():
                position = self.documents.position(event.position)
                rest = to_json(
                    {
                        "shares_closed": event.shares_closed,
                        "exit_price": event.exit_price,
                        "realized_pnl": event.realized_pnl,
                        "fully_closed": event.fully_closed,
                        "stop_hit": event.stop_hit,
                    }
                )
                return "PositionClosed", b'{"position":' + position + b"," + rest[1:]
            case CampaignCompleted():
                return "CampaignCompleted", {
                    "reason": event.reason,
                    "realized_pnl": event.realized_pnl,
                    "total_pnl": event.total_pnl,
                }
            case CampaignInvalidated():
                return "CampaignInvalidated", {
                    "reason": event.reason,
                    "price": event.price,
                    "unrealized_pnl": event.unrealized_pnl,
                }
            case CampaignMarkedToMarket():
                return "CampaignMarkedToMarket", {
                    "price": event.price,
                    "unrealized_pnl": event.unrealized_pnl,
                    "total_pnl": event.total_pnl,
                }
        return None

    def rejection(
        self,
        *,
        reason: str,
        signal_id: UUID,
        pattern_type: str,
        portfolio_id: str,
        trading_range_id: UUID,
        campaign: Campaign | None,
        correlation_id: str | None,
        now: datetime,
    ) -> OutboxMessage:
        return self.message(
            "SignalRejected",
            key=campaign.id if campaign else trading_range_id,
            campaign=campaign,
            causation_id=signal_id,
            correlation_id=correlation_id,
            details={
                "reason": reason,
                "signal_id": signal_id,
                "pattern_type": pattern_type,
                "portfolio_id": portfolio_id,
                "trading_range_id": trading_range_id,
            },
            now=now,
        )


def dead_letter_message(record: ConsumedRecord, *, reason: str, error_type: str, dlq_topic: str) -> OutboxMessage:
    """The original bytes and headers, plus why they could not be used."""
    # Text, as PostgreSQL can store it: undecodable bytes and NUL (which jsonb refuses) become backslash escapes.
    headers = {
        _storable(name): _storable(value.decode("utf-8", errors="backslashreplace")) for name, value in record.headers
    }
    headers.update(
        {
            "x-dlq-reason": _storable(reason),
            "x-dlq-error-type": error_type,
            "x-original-topic": record.topic,
            "x-original-partition": str(record.partition),
            "x-original-offset": str(record.offset),
        }
    )
    return OutboxMessage(topic=dlq_topic, key=record.key, payload=record.value or b"", headers=headers)


def _storable(text: str) -> str:
    return text.replace("\x00", "\\x00")
