"""Set-based reads and writes of campaigns, signals, offsets and the outbox, inside one transaction.

`Database.transaction()` is the unit of work: every method of the `CampaignStore` it yields runs on the same
connection, and nothing is visible to anyone until the block commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campaign_manager.domain.campaign import (
    Campaign,
    CampaignPosition,
    CampaignStatus,
    PatternType,
    PositionStatus,
    TradingRange,
    WyckoffPhase,
)
from campaign_manager.persistence.tables import campaign_positions, campaigns

CampaignKey = tuple[str, UUID]
_HUMAN_ID_SUFFIX = re.compile(r"(?<=\d{4}-\d{2}-\d{2})-\d+$")  # (portfolio_id, trading_range_id)


class VersionConflict(Exception):
    """Another writer changed a campaign between our read and our write."""


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    payload: bytes
    headers: Mapping[str, str]
    event_id: UUID | None = None
    aggregate_id: UUID | None = None


@dataclass(frozen=True)
class ProcessedSignal:
    signal_id: UUID
    outcome: str
    campaign_id: UUID | None
    reason: str | None
    source_topic: str
    source_partition: int
    source_offset: int


_CAMPAIGN_COLUMNS = [c.name for c in campaigns.columns if c.name not in ("campaign_id_base",)]
_POSITION_COLUMNS = [c.name for c in campaign_positions.columns if c.name != "campaign_id"]


def position_from_row(row: Mapping[str, Any]) -> CampaignPosition:
    values = {name: row[name] for name in _POSITION_COLUMNS}
    values["pattern_type"] = PatternType(values["pattern_type"])
    values["status"] = PositionStatus(values["status"])
    return CampaignPosition(**values)


def campaign_from_row(row: Mapping[str, Any], positions: list[CampaignPosition]) -> Campaign:
    values = {name: row[name] for name in _CAMPAIGN_COLUMNS}
    values["status"] = CampaignStatus(values["status"])
    values["phase"] = WyckoffPhase(values["phase"])
    return Campaign(**values, positions=positions)


def trading_range_from_row(row: Mapping[str, Any]) -> TradingRange:
    return TradingRange(
        id=row["id"],
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        start_time=row["start_time"],
        creek=row["creek"],
        ice=row["ice"],
        jump=row["jump"],
        phase=WyckoffPhase(row["phase"]),
    )


def _campaign_row(c: Campaign) -> dict[str, Any]:
    row = {name: getattr(c, name) for name in _CAMPAIGN_COLUMNS}
    row["status"] = str(c.status)
    row["phase"] = str(c.phase)
    # The human id without its -2, -3 suffix, so the next suffix is one indexed lookup away.
    row["campaign_id_base"] = _HUMAN_ID_SUFFIX.sub("", c.campaign_id)
    return row


def _position_row(campaign_id: UUID, p: CampaignPosition) -> dict[str, Any]:
    row = {name: getattr(p, name) for name in _POSITION_COLUMNS}
    row["pattern_type"] = str(p.pattern_type)
    row["status"] = str(p.status)
    row["campaign_id"] = campaign_id
    return row


def _columns_of(rows: list[dict[str, Any]], columns: dict[str, str] | list[str]) -> list[list[Any]]:
    """Row dicts -> one list per column: the shape `unnest($1::type[], ...)` takes.

    NUMERIC values travel as text (cast back in SQL): asyncpg's binary Decimal encoding costs five times as much.
    """
    types = columns if isinstance(columns, dict) else dict.fromkeys(columns, "")
    return [
        [None if row[name] is None else str(row[name]) for row in rows]
        if pg_type == "numeric"
        else [row[name] for row in rows]
        for name, pg_type in types.items()
    ]


def _unnested(columns: dict[str, str], first_parameter: int = 1) -> tuple[str, str]:
    """(`unnest($1::uuid[], $2::text[], ...)`, `v.a, v.b::numeric, ...`) for these columns."""
    arrays = ", ".join(
        f"${i}::{'text' if pg_type == 'numeric' else pg_type}[]"
        for i, pg_type in enumerate(columns.values(), start=first_parameter)
    )
    values = ", ".join(
        f"v.{name}::numeric" if pg_type == "numeric" else f"v.{name}" for name, pg_type in columns.items()
    )
    return f"unnest({arrays}) AS v({', '.join(columns)})", values


def _unnest_insert(table: str, columns: dict[str, str], suffix: str = "") -> str:
    """INSERT of many rows as one statement with one array parameter per column (one round trip, one plan)."""
    source, values = _unnested(columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} FROM {source} {suffix}"


_CAMPAIGN_TYPES = {
    "id": "uuid", "campaign_id": "text", "campaign_id_base": "text", "portfolio_id": "text", "symbol": "text",
    "timeframe": "text", "trading_range_id": "uuid", "status": "text", "phase": "text", "total_risk": "numeric",
    "total_allocation": "numeric", "current_risk": "numeric", "weighted_avg_entry": "numeric",
    "total_shares": "numeric", "total_pnl": "numeric", "start_date": "timestamptz", "completed_at": "timestamptz",
    "invalidation_reason": "text", "version": "int", "created_at": "timestamptz", "updated_at": "timestamptz",
}  # fmt: skip
_CAMPAIGN_CHANGING = [
    "status", "phase", "total_risk", "total_allocation", "current_risk", "weighted_avg_entry", "total_shares",
    "total_pnl", "completed_at", "invalidation_reason", "version", "updated_at",
]  # fmt: skip
_POSITION_TYPES = {
    "position_id": "uuid", "campaign_id": "uuid", "signal_id": "uuid", "pattern_type": "text",
    "entry_date": "timestamptz", "entry_price": "numeric", "shares": "numeric", "stop_loss": "numeric",
    "target_price": "numeric", "current_price": "numeric", "current_pnl": "numeric", "status": "text",
    "allocation_percent": "numeric", "risk_amount": "numeric", "created_at": "timestamptz",
    "updated_at": "timestamptz",
}  # fmt: skip
_PROCESSED_TYPES = {
    "signal_id": "uuid", "outcome": "text", "campaign_id": "uuid", "reason": "text", "source_topic": "text",
    "source_partition": "int", "source_offset": "bigint",
}  # fmt: skip
_RANGE_TYPES = {
    "id": "uuid", "symbol": "text", "timeframe": "text", "start_time": "timestamptz", "creek": "numeric",
    "ice": "numeric", "jump": "numeric", "phase": "text",
}  # fmt: skip
_OUTBOX_TYPES = {
    "event_id": "uuid", "topic": "text", "message_key": "bytea", "payload": "bytea", "headers": "jsonb",
    "aggregate_id": "uuid",
}  # fmt: skip

_INSERT_CAMPAIGNS = _unnest_insert("campaigns", _CAMPAIGN_TYPES)
_INSERT_POSITIONS = _unnest_insert("campaign_positions", _POSITION_TYPES)
_INSERT_PROCESSED = _unnest_insert("processed_signals", _PROCESSED_TYPES)
_INSERT_OUTBOX = _unnest_insert("outbox", _OUTBOX_TYPES)
_UPSERT_RANGES = _unnest_insert(
    "trading_ranges",
    _RANGE_TYPES,
    # Most signals repeat the levels already stored: skip those row writes.
    "ON CONFLICT (id) DO UPDATE SET creek = EXCLUDED.creek, ice = EXCLUDED.ice, jump = EXCLUDED.jump,"
    " phase = EXCLUDED.phase, updated_at = now()"
    " WHERE (trading_ranges.creek, trading_ranges.ice, trading_ranges.jump, trading_ranges.phase)"
    " IS DISTINCT FROM (EXCLUDED.creek, EXCLUDED.ice, EXCLUDED.jump, EXCLUDED.phase)",
)
_CHANGING_TYPES = {name: _CAMPAIGN_TYPES[name] for name in _CAMPAIGN_CHANGING}
_UPDATE_SOURCE, _ = _unnested({"id": "uuid", "expected_version": "int", **_CHANGING_TYPES})
_UPDATE_CAMPAIGNS = (
    f"UPDATE campaigns c SET ({', '.join(_CAMPAIGN_CHANGING)}) = ({_unnested(_CHANGING_TYPES)[1]})"
    f" FROM {_UPDATE_SOURCE}"
    " WHERE c.id = v.id AND c.version = v.expected_version RETURNING c.id"
)


class CampaignStore:
    """The write side. Lookups by many keys join `unnest($1::type[])` rather than `= ANY($1)`: with a prepared
    statement's generic plan, ANY over a parameter array scans the table comparing every row to every key.

     Batch statements go straight to asyncpg on the transaction's own connection: one array
    parameter per column instead of SQLAlchemy's per-row parameter processing, which cost more than the database
    work itself at thousands of rows per second."""

    def __init__(self, driver: Any) -> None:
        self.db = driver  # asyncpg.Connection, inside the unit of work's transaction

    # --- consumed offsets --------------------------------------------------------------------------------------

    async def lock_offsets(self, group: str, topic: str, partitions: Collection[int]) -> dict[int, int]:
        """The next unapplied offset per partition, row-locked until commit.

        The lock is what makes a batch safe when two consumers briefly own one partition during a rebalance:
        the second waits, then sees the first one's offsets and skips what was already applied.
        """
        ordered = sorted(partitions)
        await self.db.execute(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)"
            " SELECT $1, $2, unnest($3::int[]), 0 ON CONFLICT DO NOTHING",
            group,
            topic,
            ordered,
        )
        rows = await self.db.fetch(
            "SELECT partition, next_offset FROM consumer_offsets"
            " WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])"
            " ORDER BY partition FOR UPDATE",
            group,
            topic,
            ordered,
        )
        return {row["partition"]: row["next_offset"] for row in rows}

    async def save_offsets(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        await self.db.execute(
            "UPDATE consumer_offsets o SET next_offset = GREATEST(o.next_offset, v.next_offset), updated_at = now()"
            " FROM unnest($3::int[], $4::bigint[]) AS v(partition, next_offset)"
            " WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = v.partition",
            group,
            topic,
            list(next_offsets),
            list(next_offsets.values()),
        )

    # --- signals -----------------------------------------------------------------------------------------------

    async def processed_signal_ids(self, signal_ids: Collection[UUID]) -> set[UUID]:
        if not signal_ids:
            return set()
        rows = await self.db.fetch(
            "SELECT p.signal_id FROM processed_signals p JOIN unnest($1::uuid[]) AS k(signal_id) USING (signal_id)",
            list(signal_ids),
        )
        return {row["signal_id"] for row in rows}

    async def insert_processed_signals(self, records: Iterable[ProcessedSignal]) -> None:
        rows = [vars(r) for r in records]
        if rows:
            await self.db.execute(_INSERT_PROCESSED, *_columns_of(rows, _PROCESSED_TYPES))

    # --- trading ranges ----------------------------------------------------------------------------------------

    async def upsert_trading_ranges(self, ranges: Iterable[TradingRange]) -> None:
        # One row per range, in id order so that concurrent writers lock them in the same order.
        rows = [
            {**vars(r), "phase": str(r.phase)} for r in sorted({r.id: r for r in ranges}.values(), key=lambda r: r.id)
        ]
        if rows:
            await self.db.execute(_UPSERT_RANGES, *_columns_of(rows, _RANGE_TYPES))

    # --- campaigns ---------------------------------------------------------------------------------------------

    async def lock_open_campaigns(self, keys: Collection[CampaignKey]) -> dict[CampaignKey, Campaign]:
        """The open campaign of each (portfolio, range), with its positions, row-locked until commit."""
        if not keys:
            return {}
        portfolios, ranges = zip(*keys, strict=True)
        rows = await self.db.fetch(
            "SELECT c.* FROM campaigns c"
            " JOIN unnest($1::text[], $2::uuid[]) AS k(portfolio_id, trading_range_id)"
            " ON c.portfolio_id = k.portfolio_id AND c.trading_range_id = k.trading_range_id"
            " WHERE c.status IN ('ACTIVE', 'MARKUP') ORDER BY c.id FOR UPDATE OF c",
            list(portfolios),
            list(ranges),
        )
        positions = await self.positions_of([row["id"] for row in rows])
        return {
            (row["portfolio_id"], row["trading_range_id"]): campaign_from_row(row, positions.get(row["id"], []))
            for row in rows
        }

    async def positions_of(self, campaign_ids: list[UUID]) -> dict[UUID, list[CampaignPosition]]:
        by_campaign: dict[UUID, list[CampaignPosition]] = {}
        if not campaign_ids:
            return by_campaign
        rows = await self.db.fetch(
            "SELECT p.* FROM campaign_positions p JOIN unnest($1::uuid[]) AS k(campaign_id) USING (campaign_id)"
            " ORDER BY p.entry_date, p.created_at, p.position_id",
            campaign_ids,
        )
        for row in rows:
            by_campaign.setdefault(row["campaign_id"], []).append(position_from_row(row))
        return by_campaign

    async def taken_campaign_ids(self, bases: Collection[str]) -> set[str]:
        """Human ids already used by campaigns whose id starts with one of these `{symbol}-{date}` bases."""
        if not bases:
            return set()
        rows = await self.db.fetch(
            "SELECT c.campaign_id FROM campaigns c JOIN unnest($1::text[]) AS k(base) ON c.campaign_id_base = k.base",
            list(bases),
        )
        return {row["campaign_id"] for row in rows}

    async def insert_campaigns(self, new: Iterable[Campaign]) -> None:
        rows = [_campaign_row(c) for c in new]
        if rows:
            await self.db.execute(_INSERT_CAMPAIGNS, *_columns_of(rows, _CAMPAIGN_TYPES))

    async def update_campaigns(self, changed: Iterable[Campaign], loaded_versions: Mapping[UUID, int]) -> None:
        """Writes each campaign's new state if it still has the version we read; else VersionConflict."""
        rows = [_campaign_row(c) for c in changed]
        if not rows:
            return
        for row in rows:
            row["expected_version"] = loaded_versions[row["id"]]
        updated = await self.db.fetch(
            _UPDATE_CAMPAIGNS, *_columns_of(rows, {"id": "uuid", "expected_version": "int", **_CHANGING_TYPES})
        )
        if len(updated) != len(rows):
            ids = {row["id"] for row in updated}
            missing = [row["campaign_id"] for row in rows if row["id"] not in ids]
            raise VersionConflict(f"campaigns changed concurrently: {', '.join(missing)}")

    async def insert_positions(self, positions: Iterable[tuple[UUID, CampaignPosition]]) -> None:
        rows = [_position_row(campaign_id, p) for campaign_id, p in positions]
        if rows:
            await self.db.execute(_INSERT_POSITIONS, *_columns_of(rows, _POSITION_TYPES))

    # --- outbox ------------------------------------------------------------------------------------------------

    async def append_to_outbox(self, messages: Iterable[OutboxMessage]) -> None:
        rows = [
            {
                "event_id": m.event_id,
                "topic": m.topic,
                "message_key": m.key,
                "payload": m.payload,
                "headers": json.dumps(m.headers),
                "aggregate_id": m.aggregate_id,
            }
            for m in messages
        ]
        if rows:
            await self.db.execute(_INSERT_OUTBOX, *_columns_of(rows, _OUTBOX_TYPES))
            # Wakes the relay of whichever worker holds the relay lock; delivered at commit.
            await self.db.execute("SELECT pg_notify('campaign_outbox', '')")


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str, pool_size: int = 5, max_overflow: int = 5) -> Database:
        return cls(
            create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                pool_recycle=1800,
            )
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CampaignStore]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        async with self.engine.begin() as connection:
            # SQLAlchemy opens the driver's transaction lazily, on the first statement: open it now, so that every
            # statement sent to the driver connection below runs inside it.
            await connection.exec_driver_sql("SELECT 1")
            driver = (await connection.get_raw_connection()).driver_connection
            yield CampaignStore(driver)

    async def dispose(self) -> None:
        await self.engine.dispose()
