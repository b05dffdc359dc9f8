"""Set-based reads and writes of campaigns, signals, offsets and the outbox, inside one transaction.

`Database.transaction()` is the unit of work: every method of the `CampaignStore` it yields runs on the same
connection, and nothing is visible to anyone until the block commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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

CampaignKey = tuple[str, UUID]  # (portfolio_id, trading_range_id)
_HUMAN_ID_SUFFIX = re.compile(r"(?<=\d{4}-\d{2}-\d{2})-\d+$")


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

_CHANGING_TYPES = {name: _CAMPAIGN_TYPES[name] for name in _CAMPAIGN_CHANGING}
_UPDATE_TYPES = {"id": "uuid", "expected_version": "int", **_CHANGING_TYPES}
_OFFSET_TYPES = {"partition": "int", "next_offset": "bigint"}


def _batch_write_sql() -> str:
    """Every write of a batch as one statement of data-modifying CTEs: one round trip instead of eight.

    Foreign keys are checked when the whole statement ends, so children may reference parents inserted beside them.
    """
    parameter = 1

    def source(columns: dict[str, str]) -> tuple[str, str]:
        nonlocal parameter
        text, values = _unnested(columns, first_parameter=parameter)
        parameter += len(columns)
        return text, values

    ranges, range_values = source(_RANGE_TYPES)
    new_campaigns, new_campaign_values = source(_CAMPAIGN_TYPES)
    changed, _ = source(_UPDATE_TYPES)
    processed, processed_values = source(_PROCESSED_TYPES)
    positions, position_values = source(_POSITION_TYPES)
    messages, message_values = source(_OUTBOX_TYPES)
    offsets, _ = source(_OFFSET_TYPES)
    group, topic = f"${parameter}", f"${parameter + 1}"
    changed_values = ", ".join(
        f"v.{name}::numeric" if t == "numeric" else f"v.{name}" for name, t in _CHANGING_TYPES.items()
    )
    return f"""
        WITH ranges AS (
            INSERT INTO trading_ranges ({", ".join(_RANGE_TYPES)}) SELECT {range_values} FROM {ranges}
            ON CONFLICT (id) DO UPDATE SET creek = EXCLUDED.creek, ice = EXCLUDED.ice, jump = EXCLUDED.jump,
                phase = EXCLUDED.phase, updated_at = now()
            -- Most signals repeat the levels already stored: skip those row writes.
            WHERE (trading_ranges.creek, trading_ranges.ice, trading_ranges.jump, trading_ranges.phase)
                IS DISTINCT FROM (EXCLUDED.creek, EXCLUDED.ice, EXCLUDED.jump, EXCLUDED.phase)
        ), new_campaigns AS (
            INSERT INTO campaigns ({", ".join(_CAMPAIGN_TYPES)}) SELECT {new_campaign_values} FROM {new_campaigns}
        ), changed AS (
            UPDATE campaigns c SET ({", ".join(_CAMPAIGN_CHANGING)}) = ({changed_values}) FROM {changed}
            WHERE c.id = v.id AND c.version = v.expected_version RETURNING c.id
        ), processed AS (
            INSERT INTO processed_signals ({", ".join(_PROCESSED_TYPES)}) SELECT {processed_values} FROM {processed}
        ), positions AS (
            INSERT INTO campaign_positions ({", ".join(_POSITION_TYPES)}) SELECT {position_values} FROM {positions}
        ), messages AS (
            INSERT INTO outbox ({", ".join(_OUTBOX_TYPES)}) SELECT {message_values} FROM {messages} RETURNING 1
        ), offsets AS (
            UPDATE consumer_offsets o SET next_offset = GREATEST(o.next_offset, v.next_offset), updated_at = now()
            FROM {offsets} WHERE o.consumer_group = {group} AND o.topic = {topic} AND o.partition = v.partition
        )
        SELECT ARRAY(SELECT id FROM changed) AS changed_ids,
            -- Wakes the relay of whichever worker holds the relay lock; delivered at commit.
            CASE WHEN EXISTS (SELECT FROM messages) THEN pg_notify('campaign_outbox', '') END AS notified
    """


_BATCH_WRITE = _batch_write_sql()


@dataclass
class BatchWrite:
    """Everything one batch changes, written together by `CampaignStore.write`."""

    consumer_group: str
    topic: str
    next_offsets: Mapping[int, int]
    trading_ranges: Iterable[TradingRange] = ()
    new_campaigns: Iterable[Campaign] = ()
    changed_campaigns: Iterable[Campaign] = ()
    loaded_versions: Mapping[UUID, int] = field(default_factory=dict)
    processed: Iterable[ProcessedSignal] = ()
    positions: Iterable[tuple[UUID, CampaignPosition]] = ()
    outbox: Iterable[OutboxMessage] = ()


class CampaignStore:
    """The signal path's reads and writes, on the unit of work's connection.

    Statements go straight to asyncpg, with one array parameter per column: SQLAlchemy's per-row parameter
    processing cost more than the database work itself at thousands of rows a second. Lookups by many keys join
    `unnest($1::type[])` rather than `= ANY($1)`: under a prepared statement's generic plan, ANY over a parameter
    array scans the whole table comparing every row to every key."""

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

    # --- signals -----------------------------------------------------------------------------------------------

    async def processed_signal_ids(self, signal_ids: Collection[UUID]) -> set[UUID]:
        if not signal_ids:
            return set()
        rows = await self.db.fetch(
            "SELECT p.signal_id FROM processed_signals p JOIN unnest($1::uuid[]) AS k(signal_id) USING (signal_id)",
            list(signal_ids),
        )
        return {row["signal_id"] for row in rows}

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

    # --- writing ---------------------------------------------------------------------------------------------

    async def write(self, batch: BatchWrite) -> None:
        """Ranges, campaigns (new and changed), processed signals, positions, outbox and offsets, in one statement.

        A changed campaign is written only if it still has the version we read; else VersionConflict."""
        # One row per range, in id order so that concurrent writers lock them in the same order.
        ranges = sorted({r.id: r for r in batch.trading_ranges}.values(), key=lambda r: r.id)
        changed = [_campaign_row(c) for c in batch.changed_campaigns]
        for row in changed:
            row["expected_version"] = batch.loaded_versions[row["id"]]
        messages = [
            {
                "event_id": m.event_id,
                "topic": m.topic,
                "message_key": m.key,
                "payload": m.payload,
                "headers": json.dumps(m.headers),
                "aggregate_id": m.aggregate_id,
            }
            for m in batch.outbox
        ]
        offsets = [{"partition": p, "next_offset": o} for p, o in batch.next_offsets.items()]
        row = await self.db.fetchrow(
            _BATCH_WRITE,
            *_columns_of([{**vars(r), "phase": str(r.phase)} for r in ranges], _RANGE_TYPES),
            *_columns_of([_campaign_row(c) for c in batch.new_campaigns], _CAMPAIGN_TYPES),
            *_columns_of(changed, _UPDATE_TYPES),
            *_columns_of([vars(p) for p in batch.processed], _PROCESSED_TYPES),
            *_columns_of([_position_row(campaign_id, p) for campaign_id, p in batch.positions], _POSITION_TYPES),
            *_columns_of(messages, _OUTBOX_TYPES),
            *_columns_of(offsets, _OFFSET_TYPES),
            batch.consumer_group,
            batch.topic,
        )
        if len(row["changed_ids"]) != len(changed):
            written = set(row["changed_ids"])
            missing = [r["campaign_id"] for r in changed if r["id"] not in written]
            raise VersionConflict(f"campaigns changed concurrently: {', '.join(missing)}")


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
        """One unit of work: commits when the block ends, rolls back if it raises.

        The pool is SQLAlchemy's; the transaction is the driver's own, so that BEGIN and COMMIT are the only round
        trips it adds (SQLAlchemy's begin costs one more, and every statement here goes to the driver anyway)."""
        async with self.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            async with driver.transaction():
                yield CampaignStore(driver)

    async def dispose(self) -> None:
        await self.engine.dispose()
