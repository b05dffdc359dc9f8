"""A consumer's batches run on a connection it keeps between them; a connection that may be broken is replaced."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.persistence.store import Database, KeptConnection
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]


async def backend_pid(kept: KeptConnection) -> int:
    async with kept.transaction() as store:
        return await store.db.fetchval("SELECT pg_backend_pid()")


async def test_transactions_reuse_one_connection_and_a_refused_statement_keeps_it(database: Database) -> None:
    kept = database.kept_connection()
    pid = await backend_pid(kept)

    with pytest.raises(asyncpg.DivisionByZeroError):
        async with kept.transaction() as store:
            await store.db.execute("SELECT 1 / 0")

    assert await backend_pid(kept) == pid


async def test_a_connection_the_server_ended_is_replaced_and_the_batch_is_applied(database: Database) -> None:
    processor, feed = make_processor(database), SignalFeed()
    await process(processor, feed, [feed.record(trade_signal(trading_range()))])
    pid = await backend_pid(processor.connection)

    async with database.engine.connect() as other:  # e.g. a server restart, or an operator ending the session
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    result = await process(processor, feed, [feed.record(trade_signal(trading_range()))])

    assert [o.outcome for o in result.outcomes] == ["CREATED"]
    assert await backend_pid(processor.connection) != pid


async def test_statements_on_a_kept_connection_are_planned_once(database: Database) -> None:
    kept = database.kept_connection()

    async with kept.transaction() as store:
        assert await store.db.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
