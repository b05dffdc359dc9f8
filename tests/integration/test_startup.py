"""What the service does to the database before it consumes anything."""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import func, select

from campaign_manager.app import forget_consumed_offsets
from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import consumer_offsets
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]


async def test_a_new_embedded_broker_does_not_inherit_offsets_that_would_skip_its_first_records(
    database: Database, migrated_database_url: str
) -> None:
    # A worker consumed three records from a broker that has since been replaced by an empty one.
    group = f"test-group-{uuid4().hex[:8]}"
    feed, processor = SignalFeed(), make_processor(database, consumer_group=group)
    await process(processor, feed, [feed.record(trade_signal(trading_range())) for _ in range(3)])

    await forget_consumed_offsets(migrated_database_url, group)

    # The new broker's offsets 0, 1, 2 are new records, not ones already applied.
    async with database.engine.connect() as connection:
        left = await connection.execute(
            select(func.count()).select_from(consumer_offsets).where(consumer_offsets.c.consumer_group == group)
        )
        assert left.scalar_one() == 0
    fresh = SignalFeed(topic=feed.topic)
    result = await process(
        processor, fresh, [fresh.record(trade_signal(trading_range(), portfolio_id=f"pf-{uuid4()}"))]
    )
    assert [o.outcome for o in result.outcomes] == ["CREATED"]
