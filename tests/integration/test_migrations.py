"""The migrated schema is exactly what the code's table definitions describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import metadata

pytestmark = [pytest.mark.integration, pytest.mark.database]


async def test_migrations_and_table_definitions_agree(database: Database) -> None:
    def differences(sync_connection) -> list:  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with database.engine.connect() as connection:
        diff = await connection.run_sync(differences)

    assert diff == [], f"migrations and persistence/tables.py disagree: {diff}"


async def test_two_open_campaigns_for_one_portfolio_and_range_are_impossible(database: Database) -> None:
    async with database.engine.connect() as connection:
        indexes = await connection.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_campaigns_open_per_portfolio_range'"
        )
        (definition,) = indexes.scalars().all()
    assert "UNIQUE" in definition and "portfolio_id, trading_range_id" in definition
    assert "'ACTIVE'" in definition and "'MARKUP'" in definition
