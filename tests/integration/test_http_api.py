"""The HTTP API over a real PostgreSQL, seeded by applying real signals."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from campaign_manager.embedded import free_port
from campaign_manager.examples import aapl_campaign_signals, trade_signal, trading_range
from campaign_manager.http.app import create_app
from campaign_manager.metrics import Metrics
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import campaigns, outbox, outbox_pending
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(database))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def seed(database: Database, symbol: str, ranges: int = 1) -> None:
    feed, processor = SignalFeed(), make_processor(database)
    for _ in range(ranges):
        range_ = trading_range(symbol=symbol)
        await process(processor, feed, [feed.record(trade_signal(range_, position_size="100"))])


def unique_symbol() -> str:
    return f"T{uuid4().hex[:8].upper()}"


async def test_campaign_list_filters_by_symbol_and_paginates(client: httpx.AsyncClient, database: Database) -> None:
    symbol = unique_symbol()
    await seed(database, symbol, ranges=3)
    await seed(database, unique_symbol())

    first = (await client.get("/api/v1/campaigns", params={"symbol": symbol, "limit": 2})).json()
    second = (await client.get("/api/v1/campaigns", params={"symbol": symbol, "limit": 2, "offset": 2})).json()

    assert first["pagination"] == {"returned_count": 2, "total_count": 3, "limit": 2, "offset": 0, "has_more": True}
    assert second["pagination"] == {"returned_count": 1, "total_count": 3, "limit": 2, "offset": 2, "has_more": False}
    ids = {c["campaign_id"] for c in first["data"] + second["data"]}
    assert ids == {f"{symbol}-2024-10-15", f"{symbol}-2024-10-15-2", f"{symbol}-2024-10-15-3"}
    assert all(c["symbol"] == symbol for c in first["data"])


async def test_campaign_list_filters_by_status(client: httpx.AsyncClient, database: Database) -> None:
    symbol = unique_symbol()
    await seed(database, symbol, ranges=3)
    async with database.engine.begin() as connection:
        await connection.execute(
            campaigns.update().where(campaigns.c.campaign_id == f"{symbol}-2024-10-15").values(status="COMPLETED")
        )

    body = (await client.get("/api/v1/campaigns", params={"symbol": symbol, "status": "ACTIVE"})).json()

    assert body["pagination"]["total_count"] == 2
    assert {c["status"] for c in body["data"]} == {"ACTIVE"}


async def test_a_campaign_is_found_by_uuid_and_by_human_id_with_its_positions(
    client: httpx.AsyncClient, database: Database
) -> None:
    portfolio = f"pf-{uuid4().hex[:8]}"
    feed, processor = SignalFeed(), make_processor(database)
    signals = aapl_campaign_signals(portfolio_id=portfolio)
    result = await process(processor, feed, [feed.record(s) for s in signals])
    campaign_uuid, human_id = result.outcomes[0].campaign_id, result.outcomes[0].human_campaign_id

    by_uuid = await client.get(f"/api/v1/campaigns/{campaign_uuid}")
    by_human_id = await client.get(f"/api/v1/campaigns/{human_id}")

    assert by_uuid.status_code == by_human_id.status_code == 200
    body = by_uuid.json()
    assert body == by_human_id.json()
    assert body["status"] == "MARKUP"
    assert [p["pattern_type"] for p in body["positions"]] == ["SPRING", "SOS", "LPS"]
    assert body["positions"][0]["entry_price"] == "148.50000000"  # decimals as strings, never floats
    assert body["trading_range"]["creek"] == "148.00000000"
    for field in ("entry_price", "shares", "stop_loss", "target_price", "current_pnl", "status", "allocation_percent"):
        assert field in body["positions"][0]


async def test_an_unknown_campaign_is_404_campaign_not_found(client: httpx.AsyncClient) -> None:
    for unknown in (str(uuid4()), "NOPE-2024-01-01"):
        response = await client.get(f"/api/v1/campaigns/{unknown}")
        assert response.status_code == 404
        assert response.json() == {"detail": "Campaign not found"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "OPEN"}, "status"),
        ({"limit": "many"}, "limit"),
    ],
)
async def test_an_invalid_query_is_422_naming_the_field(client: httpx.AsyncClient, params: dict, field: str) -> None:
    response = await client.get("/api/v1/campaigns", params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


async def test_health_endpoints_answer(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_campaign_list_filters_by_portfolio(client: httpx.AsyncClient, database: Database) -> None:
    feed, processor = SignalFeed(), make_processor(database)
    range_ = trading_range(symbol=unique_symbol())
    mine, theirs = f"pf-{uuid4().hex[:8]}", f"pf-{uuid4().hex[:8]}"
    await process(
        processor,
        feed,
        [feed.record(trade_signal(range_, portfolio_id=mine)), feed.record(trade_signal(range_, portfolio_id=theirs))],
    )

    body = (await client.get("/api/v1/campaigns", params={"portfolio_id": mine})).json()

    assert [c["portfolio_id"] for c in body["data"]] == [mine]


async def test_a_campaign_whose_symbol_has_a_slash_is_found_by_human_id(
    client: httpx.AsyncClient, database: Database
) -> None:
    symbol = f"E{uuid4().hex[:4].upper()}/USD"
    await seed(database, symbol)

    response = await client.get(f"/api/v1/campaigns/{symbol}-2024-10-15")

    assert response.status_code == 200
    assert response.json()["symbol"] == symbol


@asynccontextmanager
async def unsent_event_at_the_head_of_the_outbox(database: Database, age_s: int) -> AsyncIterator[None]:
    # A negative id sorts before every id the sequence gives: this row is the next one the relay would send, whatever
    # other tests left unsent.
    row_id = -secrets.randbelow(2**62) - 1
    async with database.engine.begin() as connection:
        await connection.execute(
            outbox.insert().values(
                id=row_id,
                topic="campaign-events",
                payload=b"{}",
                headers={},
                created_at=text(f"now() - interval '{age_s} seconds'"),
            )
        )
        await connection.execute(outbox_pending.insert().values(id=row_id))
    try:
        yield
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(outbox_pending.delete().where(outbox_pending.c.id == row_id))
            await connection.execute(outbox.delete().where(outbox.c.id == row_id))


async def test_readiness_fails_naming_the_outbox_while_its_oldest_event_waits_too_long(database: Database) -> None:
    transport = httpx.ASGITransport(app=create_app(database, max_outbox_age_s=1800))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
        unsent_event_at_the_head_of_the_outbox(database, age_s=3600),
    ):
        response = await client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["outbox"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["outbox"].startswith("lagging: the oldest unpublished event is 3600s old (limit 1800s)")


async def test_readiness_passes_while_the_outbox_keeps_up(database: Database) -> None:
    transport = httpx.ASGITransport(app=create_app(database, max_outbox_age_s=86_400))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "outbox": "ok"}


async def test_readiness_names_the_database_when_it_cannot_be_reached() -> None:
    unreachable = Database.connect(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    transport = httpx.ASGITransport(app=create_app(unreachable, max_outbox_age_s=60))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/readyz")
    finally:
        await unreachable.dispose()

    assert response.status_code == 503
    assert response.json()["failing"] == ["database", "outbox"]
    assert response.json()["checks"]["outbox"] == "unknown: database unreachable"


async def test_metrics_are_served_in_prometheus_text_format_with_the_outbox_backlog(database: Database) -> None:
    metrics = Metrics()
    transport = httpx.ASGITransport(app=create_app(database, metrics=metrics))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
        unsent_event_at_the_head_of_the_outbox(database, age_s=90),
    ):
        response = await client.get("/metrics")
        schema = (await client.get("/openapi.json")).json()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert families["campaign_manager_outbox_backlog"].samples[0].value >= 1
    assert families["campaign_manager_outbox_oldest_unsent_age_seconds"].samples[0].value >= 90
    assert "campaign_manager_messages_processed" in families
    assert "/metrics" not in schema["paths"]


@pytest.mark.parametrize(
    "params", [{"symbol": "AA\x00PL"}, {"portfolio_id": "\x00"}, {"symbol": "AAPL", "portfolio_id": "pf\x00"}]
)
async def test_a_filter_with_a_nul_character_finds_nothing_rather_than_failing(
    client: httpx.AsyncClient, params: dict
) -> None:
    response = await client.get("/api/v1/campaigns", params=params)

    assert response.status_code == 200
    assert response.json()["pagination"]["total_count"] == 0


async def test_a_campaign_id_with_a_nul_character_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/campaigns/AAPL%00-2024-10-15")

    assert response.status_code == 404
    assert response.json() == {"detail": "Campaign not found"}
