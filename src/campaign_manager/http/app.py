"""The read/ops HTTP API: campaigns, health, metrics. Routes parse and call a query; nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from campaign_manager.contracts import CampaignSnapshot, campaign_document
from campaign_manager.domain.campaign import CampaignStatus
from campaign_manager.metrics import Metrics
from campaign_manager.persistence import queries
from campaign_manager.persistence.store import Database

log = structlog.get_logger(__name__)

# A probe or a scrape answers within this even when the database does not (a connection attempt alone can hang
# for a minute).
DATABASE_TIMEOUT_S = 2.0


class Pagination(BaseModel):
    returned_count: int
    total_count: int
    limit: int
    offset: int
    has_more: bool


class CampaignList(BaseModel):
    data: list[CampaignSnapshot]
    pagination: Pagination


class ErrorBody(BaseModel):
    detail: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    failing: list[str]


def create_app(
    database: Database,
    readiness_checks: dict[str, Callable[[], str | None]] | None = None,
    *,
    metrics: Metrics | None = None,
    max_outbox_age_s: float | None = None,
) -> FastAPI:
    """`readiness_checks`: name -> function returning None when fine, or what is wrong.
    `max_outbox_age_s`: readiness also fails while the oldest unpublished event is older; None: not checked."""
    app = FastAPI(
        title="campaign-manager",
        version="1.0.0",
        description="Wyckoff campaigns built from trade signals: read the campaigns and their positions.",
    )
    checks = readiness_checks or {}
    metrics = metrics or Metrics()

    async def read_outbox() -> queries.OutboxState:
        async with asyncio.timeout(DATABASE_TIMEOUT_S), database.engine.connect() as connection:
            return await queries.outbox_state(connection)

    @app.get("/api/v1/campaigns", response_model=CampaignList, tags=["campaigns"])
    async def list_campaigns(
        symbol: Annotated[str | None, Query(min_length=1, max_length=20)] = None,
        status: Annotated[CampaignStatus | None, Query()] = None,
        portfolio_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> CampaignList:
        async with database.engine.connect() as connection:
            page = await queries.list_campaigns(
                connection,
                symbol=symbol,
                status=str(status) if status else None,
                portfolio_id=portfolio_id,
                limit=limit,
                offset=offset,
            )
        data = [campaign_document(c, r) for c, r in page.campaigns]
        return CampaignList.model_validate(
            {
                "data": data,
                "pagination": Pagination(
                    returned_count=len(data),
                    total_count=page.total_count,
                    limit=limit,
                    offset=offset,
                    has_more=offset + len(data) < page.total_count,
                ),
            }
        )

    @app.get(
        "/api/v1/campaigns/{campaign_id:path}",
        response_model=CampaignSnapshot,
        responses={404: {"model": ErrorBody}},
        tags=["campaigns"],
    )
    async def get_campaign(
        campaign_id: Annotated[str, Path(min_length=1, max_length=50, description="UUID or human id")],
    ) -> dict:
        async with database.engine.connect() as connection:
            found = await queries.get_campaign(connection, campaign_id)
        if found is None:
            raise HTTPException(status_code=404, detail="Campaign not found")
        return campaign_document(*found)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready to work: the database answers, the outbox is being published, and every worker part reports fine.
        `failing` names the checks that are not `ok`."""
        results: dict[str, str] = {}
        outbox: queries.OutboxState | None = None
        try:
            outbox = await read_outbox()
            results["database"] = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised: this is the health endpoint
            results["database"] = f"unreachable: {type(error).__name__}"
        if max_outbox_age_s is not None:
            results["outbox"] = _outbox_verdict(outbox, max_outbox_age_s)
        for name, check in checks.items():
            results[name] = check() or "ok"
        failing = [name for name, result in results.items() if result != "ok"]
        body = Readiness(status="not ready" if failing else "ready", checks=results, failing=failing)
        return JSONResponse(body.model_dump(), status_code=503 if failing else 200)

    # Not in the OpenAPI document: it serves Prometheus' text format, not JSON (see the README for every metric).
    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # Database gauges are read here, at scrape time, rather than by a loop in every worker: no work when nobody
        # asks, values as fresh as the question, and a slow database delays a scrape by DATABASE_TIMEOUT_S at most.
        try:
            outbox = await read_outbox()
            metrics.set_outbox(outbox.unsent, outbox.oldest_unsent_age_s)
        except Exception as error:  # noqa: BLE001 - the rest is still worth serving; the gauges keep their last value
            log.warning("outbox_metrics_unavailable", error=f"{type(error).__name__}: {error}"[:300])
        await metrics.refresh()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _outbox_verdict(outbox: queries.OutboxState | None, max_age_s: float) -> str:
    if outbox is None:
        return "unknown: database unreachable"
    if outbox.oldest_unsent_age_s > max_age_s:
        return (
            f"lagging: the oldest unpublished event is {outbox.oldest_unsent_age_s:.0f}s old "
            f"(limit {max_age_s:g}s); {outbox.unsent} waiting"
        )
    return "ok"
