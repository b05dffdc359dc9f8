"""What the review page reads besides the campaigns: a campaign's history from the outbox, portfolio heat, and the
cursor that tells the page something changed. Over a real PostgreSQL, seeded by applying real signals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import select

from campaign_manager.contracts import CampaignEventMessage
from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range
from campaign_manager.http.app import create_app
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import outbox
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]

API_TOKEN = "review-token"


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(database, api_token=API_TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@pytest.fixture
async def own_database(empty_database_url: str) -> AsyncIterator[Database]:
    """A database of the test's own, for answers about every portfolio or every outbox row there is."""
    database = Database.connect(empty_database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def own_client(own_database: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(own_database, api_token=API_TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def apply(database: Database, *signals: dict[str, Any]) -> list:
    feed, processor = SignalFeed(), make_processor(database)
    return (await process(processor, feed, [feed.record(s) for s in signals])).outcomes


async def open_aapl(database: Database, portfolio_id: str | None = None) -> tuple[UUID, str, list[dict[str, Any]]]:
    """The story's Spring, SOS and LPS: the campaign's UUID, its human id, and the signals (for their range)."""
    signals = aapl_campaign_signals(portfolio_id=portfolio_id or f"pf-{uuid4().hex[:12]}")
    outcomes = await apply(database, *signals)
    assert [o.outcome for o in outcomes] == ["CREATED", "ADDED", "ADDED"]
    assert outcomes[0].campaign_id is not None and outcomes[0].human_campaign_id is not None
    return outcomes[0].campaign_id, outcomes[0].human_campaign_id, signals


def kinds(body: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(e["event_type"], e["campaign_version"]) for e in body["data"]]


async def test_a_campaigns_history_is_every_event_published_about_it_oldest_first(
    client: httpx.AsyncClient, database: Database
) -> None:
    campaign_id, human_id, _ = await open_aapl(database)

    by_uuid = await client.get(f"/api/v1/campaigns/{campaign_id}/events")
    by_human_id = await client.get(f"/api/v1/campaigns/{human_id}/events")

    assert by_uuid.status_code == by_human_id.status_code == 200
    body = by_uuid.json()
    assert body == by_human_id.json()
    # Spring opens it, SOS joins and moves it to MARKUP in the same version, LPS joins.
    assert kinds(body) == [
        ("CampaignCreated", 1),
        ("PositionAdded", 2),
        ("CampaignStatusChanged", 2),
        ("PositionAdded", 3),
    ]
    assert body["pagination"] == {"returned_count": 4, "total_count": 4, "limit": 50, "offset": 0, "has_more": False}
    assert [e["details"].get("position", {}).get("pattern_type") for e in body["data"]] == [
        "SPRING",
        "SOS",
        None,
        "LPS",
    ]
    assert body["data"][2]["details"]["to_status"] == "MARKUP"
    # Each one as consumers received it on `campaign-events`.
    async with database.engine.connect() as connection:
        stored = await connection.execute(
            select(outbox.c.payload).where(outbox.c.aggregate_id == campaign_id).order_by(outbox.c.id)
        )
        assert body["data"] == [json.loads(payload) for payload in stored.scalars()]
    for event in body["data"]:
        CampaignEventMessage.model_validate(event)


async def test_a_signal_rejected_by_an_open_campaign_is_on_its_timeline_and_one_without_a_campaign_is_on_none(
    client: httpx.AsyncClient, database: Database
) -> None:
    portfolio = f"pf-{uuid4().hex[:12]}"
    campaign_id, _, signals = await open_aapl(database, portfolio)
    # A fourth entry in the range would take the campaign past 5%; a signal risking 3% opens nothing anywhere.
    one_too_many = trade_signal(
        signals[0]["trading_range"], pattern_type="LPS", phase="D", entry_price="151.00", stop_loss="149.50"
    )
    too_risky = trade_signal(trading_range(), portfolio_id=portfolio, position_size="1500")
    outcomes = await apply(database, {**one_too_many, "portfolio_id": portfolio}, too_risky)
    assert [(o.outcome, o.campaign_id) for o in outcomes] == [("REJECTED", campaign_id), ("REJECTED", None)]

    body = (await client.get(f"/api/v1/campaigns/{campaign_id}/events")).json()

    assert [e["event_type"] for e in body["data"]][-2:] == ["PositionAdded", "SignalRejected"]
    rejection = body["data"][-1]["details"]
    assert rejection["reason"] == "Campaign allocation exceeded (5% max)"
    assert (rejection["pattern_type"], rejection["signal_id"]) == ("LPS", one_too_many["id"])
    assert body["pagination"]["total_count"] == 5


async def test_the_history_comes_in_pages_and_can_be_narrowed_to_some_event_types(
    client: httpx.AsyncClient, database: Database
) -> None:
    campaign_id, _, _ = await open_aapl(database)
    url = f"/api/v1/campaigns/{campaign_id}/events"

    first = (await client.get(url, params={"limit": 3})).json()
    second = (await client.get(url, params={"limit": 3, "offset": 3})).json()
    added = (await client.get(url, params={"event_type": "PositionAdded"})).json()
    entries = (await client.get(url, params={"event_type": ["CampaignCreated", "PositionAdded"]})).json()

    assert first["pagination"] == {"returned_count": 3, "total_count": 4, "limit": 3, "offset": 0, "has_more": True}
    assert second["pagination"] == {"returned_count": 1, "total_count": 4, "limit": 3, "offset": 3, "has_more": False}
    assert kinds(first) + kinds(second) == kinds((await client.get(url)).json())
    assert kinds(added) == [("PositionAdded", 2), ("PositionAdded", 3)]
    assert kinds(entries) == [("CampaignCreated", 1), ("PositionAdded", 2), ("PositionAdded", 3)]
    assert entries["pagination"]["total_count"] == 3


async def test_the_history_of_an_unknown_campaign_is_404_campaign_not_found(client: httpx.AsyncClient) -> None:
    for unknown in (str(uuid4()), "NOPE-2024-01-01", "AAPL%00-2024-10-15"):
        response = await client.get(f"/api/v1/campaigns/{unknown}/events")
        assert response.status_code == 404
        assert response.json() == {"detail": "Campaign not found"}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/campaigns/{id}/events", {"limit": 0}, "limit"),
        ("/api/v1/campaigns/{id}/events", {"limit": 101}, "limit"),
        ("/api/v1/campaigns/{id}/events", {"offset": -1}, "offset"),
        ("/api/v1/campaigns/{id}/events", {"event_type": "Opened"}, "event_type"),
        ("/api/v1/portfolios", {"limit": 0}, "limit"),
        ("/api/v1/portfolios", {"limit": "many"}, "limit"),
        ("/api/v1/portfolios", {"offset": -1}, "offset"),
    ],
)
async def test_an_invalid_query_is_422_naming_the_field(
    client: httpx.AsyncClient, path: str, params: dict, field: str
) -> None:
    response = await client.get(path.format(id=uuid4()), params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", field]


async def test_portfolios_show_their_open_risk_against_the_heat_limit_hottest_first(
    own_client: httpx.AsyncClient, own_database: Database
) -> None:
    hot, warm, done = (f"pf-{name}-{uuid4().hex[:8]}" for name in ("hot", "warm", "done"))
    # hot: the story's campaign (2,000 + 1,500 + 1,500) and a Spring in another range (2,000), of 100,000.
    await open_aapl(own_database, hot)
    await apply(own_database, trade_signal(trading_range(symbol="MSFT"), portfolio_id=hot))
    # warm: a Spring of 500 shares (1,000 at risk).
    await apply(own_database, trade_signal(trading_range(symbol="NVDA"), portfolio_id=warm, position_size="500"))
    # done: a Spring whose campaign an operator completed.
    (opened,) = await apply(own_database, trade_signal(trading_range(symbol="AMD"), portfolio_id=done))
    completed = await own_client.post(
        f"/api/v1/campaigns/{opened.campaign_id}/status",
        json={"status": "COMPLETED", "reason": "Target reached", "expected_version": 1},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert completed.status_code == 200

    body = (await own_client.get("/api/v1/portfolios")).json()
    second = (await own_client.get("/api/v1/portfolios", params={"limit": 1, "offset": 1})).json()
    one = (await own_client.get(f"/api/v1/portfolios/{hot}")).json()

    assert [p["portfolio_id"] for p in body["data"]] == [hot, warm, done]
    assert body["pagination"] == {"returned_count": 3, "total_count": 3, "limit": 50, "offset": 0, "has_more": False}
    assert (
        body["data"][0]
        == one
        == {
            "portfolio_id": hot,
            "open_campaign_count": 2,
            "open_risk": "7000.00",
            "portfolio_value": "100000.00",
            "heat_percent": "7.0000",
            "heat_limit_percent": "10",
            "max_open_risk": "10000.00",
            "open_allocation_percent": "7.0000",
            "campaign_allocation_limit_percent": "5",
        }
    )
    assert (body["data"][1]["open_risk"], body["data"][1]["heat_percent"]) == ("1000.00", "1.0000")
    assert {k: body["data"][2][k] for k in ("open_campaign_count", "open_risk", "heat_percent", "portfolio_value")} == {
        "open_campaign_count": 0,
        "open_risk": "0.00",
        "heat_percent": None,
        "portfolio_value": None,
    }
    assert [p["portfolio_id"] for p in second["data"]] == [warm]
    assert second["pagination"]["has_more"] is True


async def test_an_unknown_portfolio_is_404_portfolio_not_found(client: httpx.AsyncClient) -> None:
    for unknown in (f"pf-{uuid4().hex}", "pf%00x"):
        response = await client.get(f"/api/v1/portfolios/{unknown}")
        assert response.status_code == 404
        assert response.json() == {"detail": "Portfolio not found"}


async def cursor(client: httpx.AsyncClient) -> str:
    response = await client.get("/api/v1/changes")
    assert response.status_code == 200
    return response.json()["cursor"]


async def test_the_changes_cursor_moves_when_a_campaign_changes_and_only_then(
    own_client: httpx.AsyncClient, own_database: Database
) -> None:
    before = await cursor(own_client)
    assert await cursor(own_client) == before

    await open_aapl(own_database)

    after = await cursor(own_client)
    assert after != before
    assert await cursor(own_client) == after


async def test_the_changes_cursor_moves_when_a_transaction_commits_below_the_newest_outbox_id(
    own_client: httpx.AsyncClient, own_database: Database
) -> None:
    # A slow writer takes an outbox id first and commits last: a reader that only watched the newest id would
    # never notice its commit.
    async with own_database.engine.connect() as slow:
        transaction = await slow.begin()
        await slow.execute(outbox.insert().values(topic="campaign-events", payload=b"{}"))
        await open_aapl(own_database)
        while_it_waits = await cursor(own_client)
        await transaction.commit()

    assert await cursor(own_client) != while_it_waits
