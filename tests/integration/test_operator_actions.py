"""Operators change a campaign's status over HTTP, against a real PostgreSQL: one transaction per request,
optimistic locking by version, and a bearer token in front of every write."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import select

from campaign_manager.examples import trade_signal, trading_range
from campaign_manager.http.app import create_app
from campaign_manager.persistence.store import Database
from campaign_manager.persistence.tables import outbox
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]

TOKEN = secrets.token_urlsafe(24)
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database, api_token=TOKEN, events_topic="campaign-events")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client


async def open_campaign(database: Database) -> tuple[UUID, str]:
    """A new ACTIVE campaign at version 1: its UUID and human id."""
    feed, processor = SignalFeed(), make_processor(database)
    symbol = f"OP{uuid4().hex[:6].upper()}"
    signal = trade_signal(trading_range(symbol=symbol), portfolio_id=f"pf-{uuid4().hex[:8]}")
    (outcome,) = (await process(processor, feed, [feed.record(signal)])).outcomes
    assert outcome.campaign_id is not None and outcome.human_campaign_id is not None
    return outcome.campaign_id, outcome.human_campaign_id


async def change_status(client: httpx.AsyncClient, campaign: str, headers: dict[str, str] | None = None, **body: Any):
    return await client.post(f"/api/v1/campaigns/{campaign}/status", json=body, headers=AUTHORIZED | (headers or {}))


async def events_of(database: Database, campaign_id: UUID) -> list[dict[str, Any]]:
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            select(outbox.c.payload).where(outbox.c.aggregate_id == campaign_id).order_by(outbox.c.id)
        )
        return [json.loads(row.payload) for row in rows]


async def test_an_operator_completes_a_campaign_at_the_version_they_saw(
    client: httpx.AsyncClient, database: Database
) -> None:
    campaign_id, _ = await open_campaign(database)

    response = await change_status(
        client,
        str(campaign_id),
        headers={"X-Correlation-ID": "desk-ticket-17"},
        status="COMPLETED",
        reason="Target reached",
        expected_version=1,
    )

    # The answer is the campaign as GET now shows it, one version later.
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["version"]) == ("COMPLETED", 2)
    assert body["completed_at"] is not None
    assert body == (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert response.headers["X-Correlation-ID"] == "desk-ticket-17"
    # The change is announced through the outbox, caused by no message, correlated with the request.
    events = (await events_of(database, campaign_id))[1:]
    assert [(e["event_type"], e["campaign_version"]) for e in events] == [
        ("CampaignCompleted", 2),
        ("CampaignStatusChanged", 2),
    ]
    assert {(e["causation_id"], e["correlation_id"]) for e in events} == {(None, "desk-ticket-17")}
    assert events[0]["details"]["reason"] == "Target reached"
    assert events[1]["details"] == {"from_status": "ACTIVE", "to_status": "COMPLETED", "reason": "Target reached"}


async def test_an_operator_invalidates_a_campaign_named_by_its_human_id(
    client: httpx.AsyncClient, database: Database
) -> None:
    campaign_id, human_id = await open_campaign(database)

    response = await change_status(client, human_id, status="INVALIDATED", reason="Earnings gap", expected_version=1)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["invalidation_reason"]) == ("INVALIDATED", "Earnings gap")
    events = (await events_of(database, campaign_id))[1:]
    assert [e["event_type"] for e in events] == ["CampaignInvalidated", "CampaignStatusChanged"]
    # Without an X-Correlation-ID, the events carry a request id of their own, the one the response names.
    assert {e["correlation_id"] for e in events} == {response.headers["X-Correlation-ID"]}


async def test_an_active_campaign_may_be_moved_to_markup(client: httpx.AsyncClient, database: Database) -> None:
    campaign_id, _ = await open_campaign(database)

    response = await change_status(client, str(campaign_id), status="MARKUP", expected_version=1)

    assert (response.status_code, response.json()["status"]) == (200, "MARKUP")
    assert [e["event_type"] for e in (await events_of(database, campaign_id))[1:]] == ["CampaignStatusChanged"]


async def test_two_operators_racing_on_one_version_make_one_change(
    client: httpx.AsyncClient, database: Database
) -> None:
    campaign_id, _ = await open_campaign(database)

    # Both saw version 1; one completes, the other invalidates, at the same moment.
    completing, invalidating = await asyncio.gather(
        change_status(client, str(campaign_id), status="COMPLETED", expected_version=1),
        change_status(client, str(campaign_id), status="INVALIDATED", reason="Stop hit", expected_version=1),
    )

    # Exactly one wins; the other is told the version moved on.
    assert sorted([completing.status_code, invalidating.status_code]) == [200, 409]
    loser = completing if completing.status_code == 409 else invalidating
    assert loser.json()["current_version"] == 2
    campaign = (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert campaign["version"] == 2
    status_changes = [e for e in await events_of(database, campaign_id) if e["event_type"] == "CampaignStatusChanged"]
    assert len(status_changes) == 1


async def test_a_stale_version_is_refused_with_the_current_one(client: httpx.AsyncClient, database: Database) -> None:
    campaign_id, human_id = await open_campaign(database)

    response = await change_status(client, str(campaign_id), status="COMPLETED", expected_version=3)

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Campaign {human_id} is at version 1, not the expected version 3",
        "current_version": 1,
    }
    assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()["status"] == "ACTIVE"


async def test_an_ended_campaign_cannot_change_status_again(client: httpx.AsyncClient, database: Database) -> None:
    campaign_id, _ = await open_campaign(database)
    assert (await change_status(client, str(campaign_id), status="COMPLETED", expected_version=1)).status_code == 200

    response = await change_status(client, str(campaign_id), status="INVALIDATED", reason="Late", expected_version=2)

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["msg"] == "Invalid status transition: COMPLETED -> INVALIDATED"
    assert problem["loc"] == ["body", "status"]
    assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()["version"] == 2


async def test_an_unknown_campaign_is_not_found(client: httpx.AsyncClient) -> None:
    for unknown in (str(uuid4()), "NOPE-2024-10-15"):
        response = await change_status(client, unknown, status="COMPLETED", expected_version=1)

        assert response.status_code == 404
        assert response.json() == {"detail": "Campaign not found"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param({"status": "INVALIDATED", "expected_version": 1}, "reason is required", id="no-reason"),
        pytest.param(
            {"status": "INVALIDATED", "reason": "  ", "expected_version": 1}, "reason is required", id="blank-reason"
        ),
        pytest.param({"status": "ACTIVE", "expected_version": 1}, "status", id="back-to-active"),
        pytest.param({"status": "COMPLETED", "expected_version": 0}, "expected_version", id="version-zero"),
        pytest.param({"status": "COMPLETED"}, "expected_version", id="no-version"),
        pytest.param({"status": "COMPLETED", "expected_version": 1, "reason": "a\x00b"}, "NUL", id="nul-in-reason"),
    ],
)
async def test_a_malformed_request_is_refused_naming_the_problem(
    client: httpx.AsyncClient, database: Database, body: dict[str, Any], fragment: str
) -> None:
    campaign_id, _ = await open_campaign(database)

    response = await client.post(f"/api/v1/campaigns/{campaign_id}/status", json=body, headers=AUTHORIZED)

    assert response.status_code == 422
    assert fragment in json.dumps(response.json())
    assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()["version"] == 1


# --- the token ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param(f"Basic {TOKEN}", id="another-scheme"),
        pytest.param("Bearer", id="no-token"),
    ],
)
async def test_a_write_without_a_bearer_token_is_unauthorized(
    client: httpx.AsyncClient, database: Database, authorization: str | None
) -> None:
    campaign_id, _ = await open_campaign(database)
    headers = {"Authorization": authorization} if authorization else {}

    response = await client.post(
        f"/api/v1/campaigns/{campaign_id}/status", json={"status": "COMPLETED", "expected_version": 1}, headers=headers
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()["status"] == "ACTIVE"


async def test_a_write_with_the_wrong_token_is_forbidden(client: httpx.AsyncClient, database: Database) -> None:
    campaign_id, _ = await open_campaign(database)

    response = await change_status(
        client,
        str(campaign_id),
        headers={"Authorization": "Bearer not-the-token"},
        status="COMPLETED",
        expected_version=1,
    )

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid API token"}
    assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).json()["status"] == "ACTIVE"


@pytest.mark.parametrize("api_token", [None, ""], ids=["unset", "empty"])
async def test_without_an_api_token_configured_writes_are_disabled_and_reads_are_not(
    database: Database, api_token: str | None
) -> None:
    campaign_id, _ = await open_campaign(database)
    app = create_app(database, api_token=api_token)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        # Whatever token is sent.
        for headers in ({}, AUTHORIZED, {"Authorization": "Bearer "}):
            response = await client.post(
                f"/api/v1/campaigns/{campaign_id}/status",
                json={"status": "COMPLETED", "expected_version": 1},
                headers=headers,
            )
            assert response.status_code == 403
            assert response.json() == {"detail": "write endpoints are disabled: API_TOKEN is not set"}
        assert (await client.get(f"/api/v1/campaigns/{campaign_id}")).status_code == 200


def test_the_openapi_document_declares_the_bearer_token_on_writes_only(database: Database) -> None:
    document = create_app(database, api_token=TOKEN).openapi()

    assert document["components"]["securitySchemes"]["ApiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["ApiToken"]["description"],
    }
    write = document["paths"]["/api/v1/campaigns/{campaign_id}/status"]["post"]
    assert write["security"] == [{"ApiToken": []}]
    assert {"200", "401", "403", "404", "409", "422"} <= set(write["responses"])
    assert "security" not in document["paths"]["/api/v1/campaigns/{campaign_id}"]["get"]
