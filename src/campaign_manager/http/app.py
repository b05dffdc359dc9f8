"""The HTTP API: campaigns, their events, portfolios, operator actions, health, metrics, and the review page at `/`
(static files that read the JSON API). Routes parse and call a query or a service function; nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from uuid import uuid4

import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.types import Scope

from campaign_manager.contracts import CampaignEventMessage, CampaignSnapshot, EventType, campaign_document
from campaign_manager.domain.campaign import (
    MAX_CAMPAIGN_ALLOCATION_PERCENT,
    MAX_PORTFOLIO_HEAT_PERCENT,
    CampaignStatus,
)
from campaign_manager.domain.errors import InvalidStatusTransition, RuleViolation, VersionMismatch
from campaign_manager.http.auth import WriteAccess
from campaign_manager.metrics import Metrics
from campaign_manager.persistence import queries
from campaign_manager.persistence.store import Database
from campaign_manager.service.operator import CampaignNotFound, StatusChange, change_campaign_status
from campaign_manager.settings import Settings

log = structlog.get_logger(__name__)

# A probe or a scrape answers within this even when the database does not (a connection attempt alone can hang
# for a minute).
DATABASE_TIMEOUT_S = 2.0

# The review page: plain HTML, CSS and JavaScript shipped in the package (no build step, nothing from elsewhere).
STATIC = FilePath(__file__).with_name("static")
# The page loads only its own files and talks only to this API.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class CampaignReference(PathConvertor):
    """A campaign's UUID or human id in a path. Human ids may hold a `/` (symbols like `BRK/B`), so it spans
    segments; one ending in `/status` is the operator action's path and one ending in `/events` the campaign's
    history, not a campaign (so the first answers 405 to GET, and OPTIONS lists POST; a human id ends in a date or
    a number, never in either). Any character counts, a newline too: it is looked up and not found."""

    regex = r"(?s:.*)(?<!/status)(?<!/events)"


register_url_convertor("campaign_reference", CampaignReference())


class Pagination(BaseModel):
    returned_count: int
    total_count: int
    limit: int
    offset: int
    has_more: bool


class CampaignList(BaseModel):
    data: list[CampaignSnapshot]
    pagination: Pagination


class CampaignEventList(BaseModel):
    data: list[CampaignEventMessage] = Field(description="The events as published on `campaign-events`.")
    pagination: Pagination


class PortfolioSummary(BaseModel):
    """A portfolio's open risk against the heat limit, over its open (ACTIVE, MARKUP) campaigns."""

    portfolio_id: str
    open_campaign_count: int
    open_risk: Decimal = Field(description="Sum of the open campaigns' `current_risk`: what the heat limit judges.")
    portfolio_value: Decimal | None = Field(
        description="The value the newest open campaign was sized with; null without an open campaign."
    )
    heat_percent: Decimal | None = Field(description="`open_risk` as a percent of `portfolio_value`; null without it.")
    heat_limit_percent: Decimal = Field(
        description="A signal that would take the open risk above this percent of the portfolio is rejected."
    )
    max_open_risk: Decimal | None = Field(description="`heat_limit_percent` of `portfolio_value`; null without it.")
    open_allocation_percent: Decimal = Field(description="Sum of the open campaigns' `total_allocation`.")
    campaign_allocation_limit_percent: Decimal = Field(description="The most one campaign may allocate.")


class PortfolioList(BaseModel):
    data: list[PortfolioSummary]
    pagination: Pagination


class Changes(BaseModel):
    cursor: str = Field(
        description="Opaque. Moves whenever a campaign event (or a dead letter) is committed: poll it, and read "
        "again what you show when it differs."
    )


class ErrorBody(BaseModel):
    detail: str


class VersionConflictBody(BaseModel):
    detail: str
    current_version: int = Field(description="The campaign's version now: read it again, then decide.")


class StatusChangeRequest(BaseModel):
    """An operator's status change of one campaign."""

    model_config = ConfigDict(
        extra="forbid",
        # The rule of `_reason_for_invalidation`, for the OpenAPI document (clients and fuzzers read it there).
        json_schema_extra={
            "if": {"properties": {"status": {"const": "INVALIDATED"}}},
            "then": {"properties": {"reason": {"type": "string", "pattern": r"\S"}}, "required": ["reason"]},
        },
    )

    status: Literal["MARKUP", "COMPLETED", "INVALIDATED"] = Field(
        description="MARKUP from ACTIVE; COMPLETED or INVALIDATED from ACTIVE or MARKUP."
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Why; required for INVALIDATED.",
        json_schema_extra={"pattern": "^[^\\x00]*$"},  # no NUL: the reason is stored as text (checked below)
    )
    expected_version: int = Field(
        ge=1, le=2_147_483_647, description="The campaign's `version` as last read; 409 if it has moved on since."
    )

    @field_validator("reason")
    @classmethod
    def _storable(cls, reason: str | None) -> str | None:
        if reason is not None:
            if "\x00" in reason:
                raise ValueError("reason must not contain NUL characters")
            try:
                reason.encode()
            except UnicodeEncodeError:
                raise ValueError("reason must be valid Unicode text (no lone surrogates)") from None
        return reason

    @model_validator(mode="after")
    def _reason_for_invalidation(self) -> StatusChangeRequest:
        if self.status == "INVALIDATED" and not (self.reason and self.reason.strip()):
            raise ValueError("reason is required for INVALIDATED")
        return self


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
    api_token: SecretStr | str | None = None,
    events_topic: str = Settings.model_fields["events_topic"].default,
) -> FastAPI:
    """`readiness_checks`: name -> function returning None when fine, or what is wrong.
    `max_outbox_age_s`: readiness also fails while the oldest unpublished event is older; None: not checked.
    `api_token`: what write endpoints require as `Authorization: Bearer <token>`; None or empty: they are disabled.
    `events_topic`: where the events of operator actions go (through the outbox)."""
    app = FastAPI(
        title="campaign-manager",
        version="1.0.0",
        description="Wyckoff campaigns built from trade signals: read the campaigns and their positions; operators "
        "change a campaign's status.",
    )
    checks = readiness_checks or {}
    metrics = metrics or Metrics()
    write_access = WriteAccess(api_token)

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
            {"data": data, "pagination": _pagination(len(data), page.total_count, limit, offset)}
        )

    @app.get(
        "/api/v1/campaigns/{campaign_id:campaign_reference}/events",
        response_model=CampaignEventList,
        responses={404: {"model": ErrorBody}},
        tags=["campaigns"],
    )
    async def list_campaign_events(
        campaign_id: Annotated[str, Path(min_length=1, max_length=50, description="UUID or human id")],
        event_type: Annotated[
            list[EventType] | None, Query(max_length=10, description="Only these types (repeat the parameter).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> Response:
        """The campaign's history oldest first: every event published about it, each as it went out on
        `campaign-events` (rejections of signals that found the campaign open included)."""
        async with database.engine.connect() as connection:
            found = await queries.campaign_uuid(connection, campaign_id)
            if found is None:
                raise HTTPException(status_code=404, detail="Campaign not found")
            page = await queries.campaign_events(connection, found, event_types=event_type, limit=limit, offset=offset)
        # The stored JSON as it is: what consumers received, byte for byte, without decoding and encoding again.
        pagination = _pagination(len(page.payloads), page.total_count, limit, offset).model_dump_json().encode()
        body = b'{"data":[' + b",".join(page.payloads) + b'],"pagination":' + pagination + b"}"
        return Response(body, media_type="application/json")

    @app.get(
        "/api/v1/campaigns/{campaign_id:campaign_reference}",
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

    @app.post(
        "/api/v1/campaigns/{campaign_id:campaign_reference}/status",
        response_model=CampaignSnapshot,
        responses={
            400: {"model": ErrorBody, "description": "The body is not JSON"},
            401: {"model": ErrorBody, "description": "No bearer token (`WWW-Authenticate: Bearer`)"},
            403: {"model": ErrorBody, "description": "Wrong token, or write endpoints disabled (API_TOKEN unset)"},
            404: {"model": ErrorBody, "description": "No such campaign"},
            409: {"model": VersionConflictBody, "description": "The campaign is no longer at `expected_version`"},
        },
        dependencies=[Depends(write_access)],
        tags=["operator actions"],
    )
    async def change_status(
        campaign_id: Annotated[str, Path(min_length=1, max_length=50, description="UUID or human id")],
        body: StatusChangeRequest,
        response: Response,
        x_correlation_id: Annotated[
            str | None,
            Header(min_length=1, max_length=128, description="Carried by the events; default: a new request id."),
        ] = None,
    ) -> Any:
        """Complete or invalidate a campaign (or move an ACTIVE one to MARKUP), as an operator: one transaction,
        announced as CampaignCompleted / CampaignInvalidated and CampaignStatusChanged. An illegal transition is
        422 naming both statuses."""
        correlation_id = x_correlation_id or f"request-{uuid4()}"
        change = StatusChange(
            campaign=campaign_id,
            to_status=CampaignStatus(body.status),
            expected_version=body.expected_version,
            reason=body.reason,
            correlation_id=correlation_id,
        )
        try:
            changed = await change_campaign_status(database, change, events_topic=events_topic)
        except CampaignNotFound:
            raise HTTPException(status_code=404, detail="Campaign not found") from None
        except VersionMismatch as mismatch:
            return JSONResponse(
                VersionConflictBody(detail=str(mismatch), current_version=mismatch.actual).model_dump(),
                status_code=409,
            )
        except (InvalidStatusTransition, RuleViolation) as refused:
            # The shape of every other 422: the field it is about, and why.
            problem = {"type": "status_change_refused", "loc": ["body", "status"], "msg": str(refused)}
            return JSONResponse({"detail": [{**problem, "input": body.status}]}, status_code=422)
        log.info(
            "campaign_status_changed_by_operator",
            campaign_id=str(changed.campaign.id),
            human_campaign_id=changed.campaign.campaign_id,
            status=str(changed.campaign.status),
            version=changed.campaign.version,
            correlation_id=correlation_id,
        )
        response.headers["X-Correlation-ID"] = correlation_id
        document = campaign_document(changed.campaign, changed.trading_range)
        # In the order GET lists them.
        document["positions"].sort(key=lambda p: (p["entry_date"], p["created_at"], p["position_id"]))
        return document

    @app.get("/api/v1/portfolios", response_model=PortfolioList, tags=["portfolios"])
    async def list_portfolios(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> PortfolioList:
        """Every portfolio a signal has named, the highest heat first (then the most open risk, then by id)."""
        async with database.engine.connect() as connection:
            page = await queries.list_portfolios(connection, limit=limit, offset=offset)
        data = [_portfolio_summary(p) for p in page.portfolios]
        return PortfolioList(data=data, pagination=_pagination(len(data), page.total_count, limit, offset))

    @app.get(
        "/api/v1/portfolios/{portfolio_id}",
        response_model=PortfolioSummary,
        responses={404: {"model": ErrorBody}},
        tags=["portfolios"],
    )
    async def get_portfolio(portfolio_id: Annotated[str, Path(min_length=1, max_length=64)]) -> PortfolioSummary:
        async with database.engine.connect() as connection:
            found = await queries.get_portfolio(connection, portfolio_id)
        if found is None:
            raise HTTPException(status_code=404, detail="Portfolio not found")
        return _portfolio_summary(found)

    @app.get("/api/v1/changes", response_model=Changes, tags=["campaigns"])
    async def changes() -> Changes:
        """A cursor that moves whenever a campaign changes (two index lookups): what the review page polls."""
        async with database.engine.connect() as connection:
            return Changes(cursor=await queries.changes_cursor(connection))

    @app.get("/", include_in_schema=False)
    async def review_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", _RevalidatedFiles(directory=STATIC), name="static")

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


class _RevalidatedFiles(StaticFiles):
    """Static files that a browser asks for again (a 304 when unchanged), so an upgrade is never half seen."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def _pagination(returned: int, total: int, limit: int, offset: int) -> Pagination:
    return Pagination(
        returned_count=returned, total_count=total, limit=limit, offset=offset, has_more=offset + returned < total
    )


def _portfolio_summary(heat: queries.PortfolioHeat) -> PortfolioSummary:
    return PortfolioSummary(
        portfolio_id=heat.portfolio_id,
        open_campaign_count=heat.open_campaign_count,
        open_risk=heat.open_risk,
        portfolio_value=heat.portfolio_value,
        heat_percent=heat.heat_percent,
        heat_limit_percent=MAX_PORTFOLIO_HEAT_PERCENT,
        max_open_risk=heat.max_open_risk,
        open_allocation_percent=heat.open_allocation_percent,
        campaign_allocation_limit_percent=MAX_CAMPAIGN_ALLOCATION_PERCENT,
    )


def _outbox_verdict(outbox: queries.OutboxState | None, max_age_s: float) -> str:
    if outbox is None:
        return "unknown: database unreachable"
    if outbox.oldest_unsent_age_s > max_age_s:
        return (
            f"lagging: the oldest unpublished event is {outbox.oldest_unsent_age_s:.0f}s old "
            f"(limit {max_age_s:g}s); {outbox.unsent} waiting"
        )
    return "ok"
