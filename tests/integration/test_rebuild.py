"""`campaign-manager rebuild` on a real PostgreSQL: campaigns replayed from their positions' fills and exits agree
with what the consumers stored, and a stored figure that drifted is reported with a failing exit code.

Each test has a database of its own: rebuild reads every campaign there is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import text

from campaign_manager.cli import main
from campaign_manager.examples import position_event
from campaign_manager.persistence.store import Database
from tests.factories import AaplCampaign, PositionFeed, open_aapl_campaign

pytestmark = [pytest.mark.integration, pytest.mark.database]


@pytest.fixture
async def own_database(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    """An empty database, which `campaign-manager` commands of this test use too."""
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    database = Database.connect(empty_database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def rebuild(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Runs the command as an operator would (it runs its own event loop, hence the thread)."""
    capsys.readouterr()
    exit_code = await asyncio.to_thread(main, ["rebuild", *args])
    return exit_code, capsys.readouterr().out.splitlines()


async def completed_campaign(database: Database) -> AaplCampaign:
    """The story's campaign, filled, partly sold, marked to market and sold: COMPLETED."""
    aapl = await open_aapl_campaign(database)
    feed = PositionFeed(database)
    await feed.apply(
        position_event(aapl.id, aapl.spring, "FILLED", price="148.40", shares="1000"),
        position_event(aapl.id, aapl.sos, "FILLED", price="150.25", shares="1000"),
        position_event(aapl.id, aapl.spring, "PARTIALLY_CLOSED", price="152.40", shares="400"),
    )
    await feed.apply(
        position_event(aapl.id, aapl.spring, "CLOSED", price="153.00"),
        position_event(aapl.id, aapl.sos, "CLOSED", price="154.25"),
        position_event(aapl.id, aapl.lps, "CLOSED", price="153.90"),
    )
    return aapl


async def test_rebuild_after_a_whole_lifecycle_finds_every_stored_figure_right(
    own_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # A completed campaign, an invalidated one, and one still open with a planned, never filled LPS.
    await completed_campaign(own_database)
    stopped = await open_aapl_campaign(own_database, "SPRING", "SOS")
    await PositionFeed(own_database).apply(position_event(stopped.id, stopped.spring, "STOPPED", price="146.40"))
    still_open = await open_aapl_campaign(own_database)
    await PositionFeed(own_database).apply(
        position_event(still_open.id, still_open.sos, "FILLED", price="150.30", shares="900")
    )

    exit_code, output = await rebuild(capsys)

    assert output == ["3 campaigns, 8 positions and 8 fills and exits replayed: every stored figure matches"]
    assert exit_code == 0


async def test_a_corrupted_total_and_position_are_reported_and_rebuild_fails(
    own_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    aapl = await completed_campaign(own_database)
    # (152.40 - 148.40) x 400 + (153.00 - 148.40) x 600 + (154.25 - 150.25) x 1,000 + (153.90 - 151.00) x 1,000
    # = 1,600.00 + 2,760.00 + 4,000.00 + 2,900.00 = 11,260.00 (the LPS was never filled: its plan, 151.00)
    async with own_database.engine.begin() as connection:
        human_id = await connection.scalar(text("SELECT campaign_id FROM campaigns WHERE id = :id"), {"id": aapl.id})
        stored = await connection.scalar(text("SELECT realized_pnl FROM campaigns WHERE id = :id"), {"id": aapl.id})
        assert stored == Decimal("11260.00")
        # Someone edits the database by hand: the campaign's realized P&L, and the SOS's.
        await connection.execute(text("UPDATE campaigns SET realized_pnl = 11000.00 WHERE id = :id"), {"id": aapl.id})
        await connection.execute(
            text("UPDATE campaign_positions SET realized_pnl = 3999.99 WHERE position_id = :id"), {"id": aapl.sos}
        )

    exit_code, output = await rebuild(capsys, "--page-size", "1")

    assert output == [
        f"{human_id}  positions[{aapl.sos}].realized_pnl  stored=3999.99  recomputed=4000.00",
        f"{human_id}  realized_pnl  stored=11000.00  recomputed=11260.00",
        "1 campaign, 3 positions and 6 fills and exits replayed: 2 differences in 1 campaign",
    ]
    assert exit_code == 1


async def test_rebuild_reads_every_page(own_database: Database, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(5):
        await open_aapl_campaign(own_database, "SPRING")

    exit_code, output = await rebuild(capsys, "--page-size", "2")

    assert (exit_code, output) == (
        0,
        ["5 campaigns, 5 positions and 0 fills and exits replayed: every stored figure matches"],
    )
