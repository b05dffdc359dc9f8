"""Read-side queries for the HTTP API: campaigns with their positions and trading range."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from campaign_manager.domain.campaign import Campaign, TradingRange
from campaign_manager.persistence.store import campaign_from_row, position_from_row, trading_range_from_row
from campaign_manager.persistence.tables import campaign_positions, campaigns, trading_ranges


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


# Both read the partial index of unpublished rows. The age is that of the lowest unsent id, the next message the
# relay (which publishes in id order) will send: one index entry, not a scan of the whole backlog.
_OUTBOX_STATE = text(
    """
    SELECT
        (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unsent,
        COALESCE(
            EXTRACT(EPOCH FROM now() - (SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1)),
            0
        )::float8 AS oldest_unsent_age_s
    """
)


async def outbox_state(connection: AsyncConnection) -> OutboxState:
    """What the relay has still to publish."""
    row = (await connection.execute(_OUTBOX_STATE)).one()
    return OutboxState(unsent=row.unsent, oldest_unsent_age_s=max(row.oldest_unsent_age_s, 0.0))
