"""Gathers what one batch's domain calls changed into one `BatchWrite`: the campaigns and positions to update,
and the events that announce each change.

Every handler that changes existing campaigns works the same way: lock them, `track` them, call the domain once per
message, `record` each campaign it touched (collecting the events that call caused), then `batch_write`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from campaign_manager.contracts import DocumentCache
from campaign_manager.domain.campaign import Campaign, CampaignPosition
from campaign_manager.domain.events import CampaignEvent
from campaign_manager.persistence.store import BatchWrite, OutboxMessage
from campaign_manager.service.outgoing import EventSerializer


class CampaignChanges:
    def __init__(self, events_topic: str, now: datetime) -> None:
        self.now = now
        self.documents = DocumentCache()
        self.serializer = EventSerializer(events_topic, self.documents)
        self.loaded_versions: dict[UUID, int] = {}
        self.changed: dict[UUID, Campaign] = {}
        # Campaign events in the order they happened; a handler appends its rejection events here too, so that
        # one campaign's events keep their order.
        self.outbox: list[OutboxMessage] = []

    def track(self, campaigns: Iterable[Campaign]) -> None:
        """Campaigns as loaded: their stored version is what the write expects to replace."""
        for campaign in campaigns:
            self.loaded_versions.setdefault(campaign.id, campaign.version)

    def record(
        self,
        campaign: Campaign,
        *,
        causation_id: UUID | None,
        correlation_id: str | None,
        unpublished: tuple[type[CampaignEvent], ...] = (),
    ) -> list[CampaignEvent]:
        """The events the last domain call recorded on `campaign`, turned into outbox messages; returned as well.

        Events of the `unpublished` types are returned but not published (a price's CampaignMarkedToMarket between
        two due marks)."""
        events = campaign.collect_events()
        if campaign.version != self.loaded_versions[campaign.id]:
            self.changed[campaign.id] = campaign
            # The domain stamps each position it changes with `now`, again on a second change in this unit of work:
            # encode them anew, so that events and the write carry what they hold now.
            self.documents.forget_positions(p for p in campaign.positions if p.updated_at == self.now)
        published = [e for e in events if not isinstance(e, unpublished)] if unpublished else events
        self.outbox.extend(
            self.serializer.campaign_events(
                published, campaign, causation_id=causation_id, correlation_id=correlation_id, now=self.now
            )
        )
        return events

    def changed_positions(self) -> list[CampaignPosition]:
        # The domain stamps every position it changes with the time of the change: this unit of work's `now`.
        return [p for c in self.changed.values() for p in c.positions if p.updated_at == self.now]

    def batch_write(
        self,
        *,
        consumer_group: str,
        topic: str,
        next_offsets: dict[int, int],
        outbox: Iterable[OutboxMessage] = (),
        **more: Any,
    ) -> BatchWrite:
        """Everything gathered, plus `outbox` (dead letters) and any other part of the write."""
        return BatchWrite(
            consumer_group=consumer_group,
            topic=topic,
            next_offsets=next_offsets,
            changed_campaigns=list(self.changed.values()),
            loaded_versions=self.loaded_versions,
            changed_positions=self.changed_positions(),
            outbox=[*outbox, *self.outbox],
            documents=self.documents,
            **more,
        )
