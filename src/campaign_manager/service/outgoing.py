"""Turns what happened into outbox messages: campaign events for `campaign-events`, dead letters for `*.dlq`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import pydantic_core

from campaign_manager.contracts import SCHEMA_VERSION, campaign_document, position_document
from campaign_manager.domain.campaign import Campaign
from campaign_manager.domain.events import CampaignCreated, CampaignStatusChanged, PositionAdded
from campaign_manager.domain.ids import new_id
from campaign_manager.persistence.store import OutboxMessage
from campaign_manager.service.records import ConsumedRecord

JSON_CONTENT_TYPE = "application/json"


def _event_message(
    event_type: str,
    *,
    key: UUID,
    campaign: Campaign | None,
    causation_id: UUID,
    correlation_id: str | None,
    details: dict,
    now: datetime,
    topic: str,
) -> OutboxMessage:
    event_id = new_id()
    # Shaped as CampaignEventMessage (the contract; tests hold the two together), serialised without building it.
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": now,
        "campaign_version": campaign.version if campaign else None,
        "causation_id": causation_id,
        "correlation_id": correlation_id,
        "campaign": campaign_document(campaign) if campaign else None,
        "details": details,
    }
    return OutboxMessage(
        topic=topic,
        key=str(key).encode(),
        payload=pydantic_core.to_json(event),
        headers={"content-type": JSON_CONTENT_TYPE, "event-type": event_type, "event-id": str(event_id)},
        event_id=event_id,
        aggregate_id=campaign.id if campaign else None,
    )


def campaign_event_messages(
    events: list,
    campaign: Campaign,
    *,
    causation_id: UUID,
    correlation_id: str | None,
    now: datetime,
    topic: str,
) -> list[OutboxMessage]:
    """One message per published domain event, each carrying the campaign as it is now."""
    common = {
        "key": campaign.id,
        "campaign": campaign,
        "causation_id": causation_id,
        "correlation_id": correlation_id,
        "now": now,
        "topic": topic,
    }
    messages = []
    for event in events:
        if isinstance(event, CampaignCreated):
            details = {"position": position_document(event.position)}
            messages.append(_event_message("CampaignCreated", details=details, **common))
        elif isinstance(event, PositionAdded):
            details = {"position": position_document(event.position)}
            messages.append(_event_message("PositionAdded", details=details, **common))
        elif isinstance(event, CampaignStatusChanged):
            details = {"from_status": event.from_status, "to_status": event.to_status, "reason": event.reason}
            messages.append(_event_message("CampaignStatusChanged", details=details, **common))
    return messages


def rejection_message(
    *,
    reason: str,
    signal_id: UUID,
    pattern_type: str,
    portfolio_id: str,
    trading_range_id: UUID,
    campaign: Campaign | None,
    correlation_id: str | None,
    now: datetime,
    topic: str,
) -> OutboxMessage:
    return _event_message(
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
        topic=topic,
    )


def dead_letter_message(record: ConsumedRecord, *, reason: str, error_type: str, dlq_topic: str) -> OutboxMessage:
    """The original bytes and headers, plus why they could not be used."""
    headers = {name: value.decode("utf-8", errors="backslashreplace") for name, value in record.headers}
    headers.update(
        {
            "x-dlq-reason": reason,
            "x-dlq-error-type": error_type,
            "x-original-topic": record.topic,
            "x-original-partition": str(record.partition),
            "x-original-offset": str(record.offset),
        }
    )
    return OutboxMessage(topic=dlq_topic, key=record.key, payload=record.value or b"", headers=headers)
