"""The read/ops HTTP API: campaigns, health. Routes parse and call a query; nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from campaign_manager.contracts import CampaignSnapshot, campaign_document
from campaign_manager.domain.campaign import CampaignStatus
from campaign_manager.persistence import queries
from campaign_manager.persistence.store import Database


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


def create_app(database: Database, readiness_checks: dict[str, Callable[[], str | None]] | None = None) -> FastAPI:
    """`readiness_checks`: name -> function returning None when fine, or what is wrong."""
    app = FastAPI(
        title="campaign-manager",
        version="1.0.0",
        description="Wyckoff campaigns built from trade signals: read the campaigns and their positions.",
    )
    checks = readiness_checks or {}

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
        """Ready to work: the database answers and every worker part reports fine."""
        results: dict[str, str] = {}
        try:
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            results["database"] = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised: this is the health endpoint
            results["database"] = f"unreachable: {type(error).__name__}"
        for name, check in checks.items():
            results[name] = check() or "ok"
        ready = all(v == "ok" for v in results.values())
        body = Readiness(status="ready" if ready else "not ready", checks=results)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return app
