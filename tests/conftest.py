"""Shared fixtures. Servers start lazily: unit tests start none; see tests/servers.py for which ones run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from campaign_manager.persistence.migrate import upgrade_to_head
from campaign_manager.persistence.store import Database
from campaign_manager.service.rebuild import Difference, check_all_campaigns
from tests.servers import database_server, kafka_server, scratch_database


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A test that runs the CLI configures logging onto pytest's captured stdout, which is closed after the test:
    put back what was there, so later log lines do not write to a closed file."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**structlog_config)
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with database_server() as url:
        yield url


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> AsyncIterator[str]:
    await upgrade_to_head(database_url)
    yield database_url
    # After every test that shared this database: each campaign, replayed from its positions and their history,
    # must agree with what was stored (what `campaign-manager rebuild` checks).
    differences: list[Difference] = []
    database = Database.connect(database_url, pool_size=1, max_overflow=0)
    try:
        await check_all_campaigns(database, differences.append)
    finally:
        await database.dispose()
    assert not differences, f"rebuild found stored figures that disagree with the replay: {differences[:20]}"


@pytest.fixture
async def empty_database_url(migrated_database_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own, with no rows: for checks that read every campaign there is."""
    with scratch_database(migrated_database_url) as url:
        await upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    with kafka_server() as bootstrap_servers:
        yield bootstrap_servers


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    db = Database.connect(migrated_database_url)
    try:
        yield db
    finally:
        await db.dispose()
