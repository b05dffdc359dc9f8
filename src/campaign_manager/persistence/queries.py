"""Read-side queries for the HTTP API: campaigns with their positions and trading range, a campaign's event
history, portfolio heat, and the cursor that tells a reader something changed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Row, Select, func, nulls_last, select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from campaign_manager.domain.campaign import (
    ALLOCATION_STEP,
    CENTS,
    MAX_PORTFOLIO_HEAT_PERCENT,
    OPEN_STATUSES,
    Campaign,
    TradingRange,
)
from campaign_manager.persistence.store import campaign_from_row, position_from_row, trading_range_from_row
from campaign_manager.persistence.tables import campaign_positions, campaigns, outbox, portfolios, trading_ranges


@dataclass(frozen=True)
class OutboxState:
    unsent: int
    oldest_unsent_age_s: float  # 0 when nothing waits


@dataclass(frozen=True)
class CampaignPage:
    campaigns: list[tuple[Campaign, TradingRange | None]]
    total_count: int


async def _with_details(connection: AsyncConnection, rows: list) -> list[tuple[Campaign, TradingRange | None]]:
    positions: dict[UUID, list] = {}
    if rows:
        result = await connection.execute(
            select(campaign_positions)
            .where(campaign_positions.c.campaign_id.in_([row["id"] for row in rows]))
            .order_by(
                campaign_positions.c.entry_date, campaign_positions.c.created_at, campaign_positions.c.position_id
            )
        )
        for position in result.mappings():
            positions.setdefault(position["campaign_id"], []).append(position_from_row(position))
    range_ids = list({row["trading_range_id"] for row in rows})
    ranges = {}
    if range_ids:
        result = await connection.execute(select(trading_ranges).where(trading_ranges.c.id.in_(range_ids)))
        ranges = {r["id"]: trading_range_from_row(r) for r in result.mappings()}
    return [(campaign_from_row(row, positions.get(row["id"], [])), ranges.get(row["trading_range_id"])) for row in rows]


def _matches_nothing(*values: str | None) -> bool:
    """PostgreSQL text cannot hold NUL: a value with one matches no row, and sent as a parameter it makes the driver
    raise rather than find nothing."""
    return any(value is not None and "\x00" in value for value in values)


async def list_campaigns(
    connection: AsyncConnection,
    *,
    symbol: str | None,
    status: str | None,
    limit: int,
    offset: int,
    portfolio_id: str | None = None,
) -> CampaignPage:
    if _matches_nothing(symbol, status, portfolio_id):
        return CampaignPage([], 0)
    conditions = []
    if symbol is not None:
        conditions.append(campaigns.c.symbol == symbol)
    if status is not None:
        conditions.append(campaigns.c.status == status)
    if portfolio_id is not None:
        conditions.append(campaigns.c.portfolio_id == portfolio_id)
    total = (await connection.execute(select(func.count()).select_from(campaigns).where(*conditions))).scalar_one()
    rows = (
        (
            await connection.execute(
                select(campaigns)
                .where(*conditions)
                .order_by(campaigns.c.start_date.desc(), campaigns.c.id)
                .limit(limit)
                .offset(offset)
            )
        )
        .mappings()
        .all()
    )
    return CampaignPage(await _with_details(connection, list(rows)), total)


async def get_campaign(connection: AsyncConnection, id_or_human_id: str) -> tuple[Campaign, TradingRange | None] | None:
    """By UUID or by human id (`AAPL-2024-10-15`)."""
    if _matches_nothing(id_or_human_id):
        return None
    try:
        condition = campaigns.c.id == UUID(id_or_human_id)
    except ValueError:
        condition = campaigns.c.campaign_id == id_or_human_id
    rows = (await connection.execute(select(campaigns).where(condition))).mappings().all()
    if not rows:
        return None
    return (await _with_details(connection, list(rows)))[0]


# The age is that of the lowest pending id, the next message the relay (which publishes in id order) will send:
# one index entry and one outbox row, not a scan of the whole backlog.
_OUTBOX_STATE = text(
    """
    SELECT
        (SELECT count(*) FROM outbox_pending) AS unsent,
        COALESCE(
            EXTRACT(EPOCH FROM now() - (
                SELECT o.created_at FROM outbox o WHERE o.id = (SELECT min(id) FROM outbox_pending)
            )),
            0
        )::float8 AS oldest_unsent_age_s
    """
)


async def outbox_state(connection: AsyncConnection) -> OutboxState:
    """What the relay has still to publish."""
    row = (await connection.execute(_OUTBOX_STATE)).one()
    return OutboxState(unsent=row.unsent, oldest_unsent_age_s=max(row.oldest_unsent_age_s, 0.0))


# --- a campaign's history ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPage:
    payloads: list[bytes]  # each a `campaign-events` value, exactly as published
    total_count: int


async def campaign_uuid(connection: AsyncConnection, id_or_human_id: str) -> UUID | None:
    """The UUID of the campaign with this UUID or human id; None if there is none."""
    if _matches_nothing(id_or_human_id):
        return None
    try:
        condition = campaigns.c.id == UUID(id_or_human_id)
    except ValueError:
        condition = campaigns.c.campaign_id == id_or_human_id
    return (await connection.execute(select(campaigns.c.id).where(condition))).scalar_one_or_none()


async def campaign_events(
    connection: AsyncConnection,
    campaign_id: UUID,
    *,
    event_types: Collection[str] | None = None,
    limit: int,
    offset: int,
) -> EventPage:
    """The campaign's events oldest first, from the outbox, which keeps every message it published. Outbox ids
    follow a campaign's commit order: its writers hold its row lock. A rejection that found no campaign has no
    aggregate and is nobody's history."""
    conditions = [outbox.c.aggregate_id == campaign_id]
    if event_types:
        conditions.append(outbox.c.event_type.in_(sorted(event_types)))
    total = (await connection.execute(select(func.count()).select_from(outbox).where(*conditions))).scalar_one()
    payloads = (
        await connection.execute(
            select(outbox.c.payload).where(*conditions).order_by(outbox.c.id).limit(limit).offset(offset)
        )
    ).scalars()
    return EventPage(list(payloads), total)


# Outbox ids are taken at insert and become visible at commit, so a transaction can commit rows below the newest
# id after the newest is seen: counting the rows of the last ids too makes the cursor move when such a straggler
# commits. Every writer's rows commit within a batch's time, far fewer ids than this.
CURSOR_WINDOW = 5000


async def changes_cursor(connection: AsyncConnection) -> str:
    """A token that moves whenever a message is committed to the outbox, i.e. whenever a campaign changes: two
    lookups in the outbox's primary key (the newest id, and a bounded count just below it)."""
    newest = select(func.max(outbox.c.id)).scalar_subquery()
    recent = select(func.count()).select_from(outbox).where(outbox.c.id > newest - CURSOR_WINDOW).scalar_subquery()
    row = (await connection.execute(select(newest.label("newest"), recent.label("recent")))).one()
    return f"{row.newest or 0}-{row.recent}"


# --- portfolio heat ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioHeat:
    portfolio_id: str
    open_campaign_count: int
    open_risk: Decimal  # the sum of the open campaigns' current risk: what the 10% heat limit judges
    open_allocation_percent: Decimal
    portfolio_value: Decimal | None  # what the newest open campaign was sized with; None without one

    @property
    def max_open_risk(self) -> Decimal | None:
        """The open risk the heat limit allows: 10% of the portfolio value."""
        if self.portfolio_value is None:
            return None
        return (self.portfolio_value * MAX_PORTFOLIO_HEAT_PERCENT / 100).quantize(CENTS)

    @property
    def heat_percent(self) -> Decimal | None:
        """The open risk as a percent of the portfolio value."""
        if self.portfolio_value is None:
            return None
        return (self.open_risk * 100 / self.portfolio_value).quantize(ALLOCATION_STEP)


@dataclass(frozen=True)
class PortfolioPage:
    portfolios: list[PortfolioHeat]
    total_count: int


def _portfolio_heat_query(portfolio_id: str | None = None) -> Select:
    """Every known portfolio (or one) with the aggregates of its open campaigns, hottest first. Both subqueries read
    only open campaigns, which the partial unique index on (portfolio_id, trading_range_id) covers."""
    open_campaigns = campaigns.c.status.in_([str(s) for s in OPEN_STATUSES])
    wanted = [] if portfolio_id is None else [campaigns.c.portfolio_id == portfolio_id]
    totals = (
        select(
            campaigns.c.portfolio_id,
            func.count().label("open_campaign_count"),
            func.sum(campaigns.c.current_risk).label("open_risk"),
            func.sum(campaigns.c.total_allocation).label("open_allocation_percent"),
        )
        .where(open_campaigns, *wanted)
        .group_by(campaigns.c.portfolio_id)
        .subquery("totals")
    )
    newest = (
        select(campaigns.c.portfolio_id, campaigns.c.portfolio_value)
        .where(open_campaigns, campaigns.c.portfolio_value.is_not(None), *wanted)
        .ext(distinct_on(campaigns.c.portfolio_id))
        .order_by(campaigns.c.portfolio_id, campaigns.c.created_at.desc(), campaigns.c.id)
        .subquery("newest")
    )
    open_risk = func.coalesce(totals.c.open_risk, 0)
    heat = open_risk / func.nullif(newest.c.portfolio_value, 0)
    query = (
        select(
            portfolios.c.portfolio_id,
            func.coalesce(totals.c.open_campaign_count, 0).label("open_campaign_count"),
            open_risk.label("open_risk"),
            func.coalesce(totals.c.open_allocation_percent, 0).label("open_allocation_percent"),
            newest.c.portfolio_value,
        )
        .select_from(
            portfolios.outerjoin(totals, totals.c.portfolio_id == portfolios.c.portfolio_id).outerjoin(
                newest, newest.c.portfolio_id == portfolios.c.portfolio_id
            )
        )
        .order_by(nulls_last(heat.desc()), open_risk.desc(), portfolios.c.portfolio_id)
    )
    if portfolio_id is not None:
        query = query.where(portfolios.c.portfolio_id == portfolio_id)
    return query


def _portfolio_heat(row: Row) -> PortfolioHeat:
    return PortfolioHeat(
        portfolio_id=row.portfolio_id,
        open_campaign_count=row.open_campaign_count,
        open_risk=Decimal(row.open_risk).quantize(CENTS),
        open_allocation_percent=Decimal(row.open_allocation_percent).quantize(ALLOCATION_STEP),
        portfolio_value=row.portfolio_value,
    )


async def list_portfolios(connection: AsyncConnection, *, limit: int, offset: int) -> PortfolioPage:
    """Every portfolio the service has seen a signal for, the highest heat first (then the most open risk, then
    by id); a portfolio without open campaigns has no known value and comes after those that have."""
    total = (await connection.execute(select(func.count()).select_from(portfolios))).scalar_one()
    rows = await connection.execute(_portfolio_heat_query().limit(limit).offset(offset))
    return PortfolioPage([_portfolio_heat(row) for row in rows], total)


async def get_portfolio(connection: AsyncConnection, portfolio_id: str) -> PortfolioHeat | None:
    if _matches_nothing(portfolio_id):
        return None
    row = (await connection.execute(_portfolio_heat_query(portfolio_id))).one_or_none()
    return None if row is None else _portfolio_heat(row)
