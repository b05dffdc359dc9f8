"""Generated requests against the HTTP API over a real PostgreSQL: whatever a client sends, the API never fails
(no 5xx) and answers only what its OpenAPI document promises."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from campaign_manager.examples import aapl_campaign_signals
from campaign_manager.http.app import create_app
from campaign_manager.persistence.store import Database
from campaign_manager.schemas import openapi_document
from tests.factories import SignalFeed, make_processor, process

pytestmark = [pytest.mark.integration, pytest.mark.database]

EXAMPLES_PER_OPERATION = 100  # nine operations; the whole test stays well under a minute
# The write endpoint is fuzzed behind its token (tests/integration/test_operator_actions.py covers the refusals).
API_TOKEN = "fuzzing-token"


@pytest.fixture(scope="module")
async def seeded_database_url(migrated_database_url: str) -> str:
    # At least one campaign with positions and a range, so generated ids and filters sometimes hit real rows.
    database = Database.connect(migrated_database_url)
    try:
        feed, processor = SignalFeed(), make_processor(database)
        await process(processor, feed, [feed.record(s) for s in aapl_campaign_signals(portfolio_id="fuzz")])
    finally:
        await database.dispose()
    return migrated_database_url


@pytest.fixture(scope="module")
def api_app(seeded_database_url: str) -> FastAPI:
    # Schemathesis runs the app on an event loop of its own: no pooled connection may outlive a request there.
    database = Database(create_async_engine(seeded_database_url, poolclass=NullPool))
    return create_app(database, max_outbox_age_s=86_400, api_token=API_TOKEN)


# The document the app serves; building it runs no route, so no database is needed yet.
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,  # nothing saved between runs: a failure prints the request that caused it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_makes_the_api_fail_or_answer_outside_its_schema(case: schemathesis.Case, api_app: FastAPI) -> None:
    case.call_and_validate(app=api_app, headers={"Authorization": f"Bearer {API_TOKEN}"})
