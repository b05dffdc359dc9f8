"""Applies the Alembic migrations; run by `campaign-manager migrate` and at every start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Kept out of the ini options: configparser would read the %-escapes of a socket path as interpolation.
    config.attributes["database_url"] = database_url
    return config


async def upgrade_to_head(database_url: str) -> None:
    """Migrates on one connection, serialised by an advisory lock so that workers starting together take turns."""
    engine = create_async_engine(database_url)
    config = alembic_config(database_url)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT pg_advisory_lock(hashtext('campaign-manager-migrate'))")
            try:

                def _upgrade(sync_connection) -> None:  # type: ignore[no-untyped-def]
                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, "head")

                await connection.run_sync(_upgrade)
                await connection.commit()
            finally:
                await connection.rollback()
                await connection.exec_driver_sql("SELECT pg_advisory_unlock(hashtext('campaign-manager-migrate'))")
    finally:
        await engine.dispose()


def migrate(database_url: str) -> None:
    asyncio.run(upgrade_to_head(database_url))
