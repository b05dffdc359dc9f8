"""Set-based reads and writes of campaigns, signals, offsets and the outbox, inside one transaction.

`Database.transaction()` is the unit of work: every method of the `CampaignStore` it yields runs on the same
connection, and nothing is visible to anyone until the block commits.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from campaign_manager.domain.campaign import (
    OPEN_STATUSES,
    Campaign,
    CampaignPosition,
    CampaignStatus,
    PatternType,
    PositionStatus,
    TradingRange,
    WyckoffPhase,
)
from campaign_manager.persistence.tables import (
    campaign_positions,
    campaigns,
    consumer_offsets,
    outbox,
    processed_signals,
    trading_ranges,
)

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


_CAMPAIGN_COLUMNS = [
    c.name for c in campaigns.columns if c.name not in ("campaign_id_base",)
]
_POSITION_COLUMNS = [c.name for c in campaign_positions.columns if c.name != "campaign_id"]


def _position_from_row(row: Mapping[str, Any]) -> CampaignPosition:
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


class CampaignStore:
    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    # --- consumed offsets --------------------------------------------------------------------------------------

    async def lock_offsets(self, group: str, topic: str, partitions: Collection[int]) -> dict[int, int]:
        """The next unapplied offset per partition, row-locked until commit.

        The lock is what makes a batch safe when two consumers briefly own one partition during a rebalance:
        the second waits, then sees the first one's offsets and skips what was already applied.
        """
        ordered = sorted(partitions)
        await self.connection.execute(
            pg_insert(consumer_offsets)
            .values([{"consumer_group": group, "topic": topic, "partition": p, "next_offset": 0} for p in ordered])
            .on_conflict_do_nothing()
        )
        rows = await self.connection.execute(
            select(consumer_offsets.c.partition, consumer_offsets.c.next_offset)
            .where(
                consumer_offsets.c.consumer_group == group,
                consumer_offsets.c.topic == topic,
                consumer_offsets.c.partition.in_(ordered),
            )
            .order_by(consumer_offsets.c.partition)
            .with_for_update()
        )
        return {row.partition: row.next_offset for row in rows}

    async def save_offsets(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        await self.connection.execute(
            text(
                "UPDATE consumer_offsets o SET next_offset = GREATEST(o.next_offset, v.next_offset), updated_at = now()"
                " FROM unnest(CAST(:partitions AS int[]), CAST(:offsets AS bigint[])) AS v(partition, next_offset)"
                " WHERE o.consumer_group = :group AND o.topic = :topic AND o.partition = v.partition"
            ),
            {
                "group": group,
                "topic": topic,
                "partitions": list(next_offsets),
                "offsets": list(next_offsets.values()),
            },
        )

    # --- signals -----------------------------------------------------------------------------------------------

    async def processed_signal_ids(self, signal_ids: Collection[UUID]) -> set[UUID]:
        if not signal_ids:
            return set()
        rows = await self.connection.execute(
            select(processed_signals.c.signal_id).where(processed_signals.c.signal_id.in_(list(signal_ids)))
        )
        return set(rows.scalars())

    async def insert_processed_signals(self, records: Iterable[ProcessedSignal]) -> None:
        rows = [vars(r) for r in records]
        if rows:
            await self.connection.execute(insert(processed_signals), rows)

    # --- trading ranges ----------------------------------------------------------------------------------------

    async def upsert_trading_ranges(self, ranges: Iterable[TradingRange]) -> None:
        rows = [
            {**vars(r), "phase": str(r.phase)}
            for r in sorted({r.id: r for r in ranges}.values(), key=lambda r: r.id)
        ]
        if not rows:
            return
        stmt = pg_insert(trading_ranges)
        level_columns = ("creek", "ice", "jump", "phase")
        await self.connection.execute(
            stmt.on_conflict_do_update(
                index_elements=[trading_ranges.c.id],
                set_={**{c: stmt.excluded[c] for c in level_columns}, "updated_at": func.now()},
                # Most signals repeat the levels already stored: skip those row writes.
                where=tuple_(*(trading_ranges.c[c] for c in level_columns)).is_distinct_from(
                    tuple_(*(stmt.excluded[c] for c in level_columns))
                ),
            ),
            rows,
        )

    # --- campaigns ---------------------------------------------------------------------------------------------

    async def lock_open_campaigns(self, keys: Collection[CampaignKey]) -> dict[CampaignKey, Campaign]:
        """The open campaign of each (portfolio, range), with its positions, row-locked until commit."""
        if not keys:
            return {}
        rows = (
            await self.connection.execute(
                select(campaigns)
                .where(
                    tuple_(campaigns.c.portfolio_id, campaigns.c.trading_range_id).in_(list(keys)),
                    campaigns.c.status.in_([str(s) for s in OPEN_STATUSES]),
                )
                .order_by(campaigns.c.id)
                .with_for_update()
            )
        ).mappings().all()
        positions = await self.positions_of([row["id"] for row in rows])
        return {
            (row["portfolio_id"], row["trading_range_id"]): campaign_from_row(row, positions.get(row["id"], []))
            for row in rows
        }

    async def positions_of(self, campaign_ids: list[UUID]) -> dict[UUID, list[CampaignPosition]]:
        by_campaign: dict[UUID, list[CampaignPosition]] = {}
        if not campaign_ids:
            return by_campaign
        rows = await self.connection.execute(
            select(campaign_positions)
            .where(campaign_positions.c.campaign_id.in_(campaign_ids))
            .order_by(campaign_positions.c.entry_date, campaign_positions.c.created_at, campaign_positions.c.position_id)
        )
        for row in rows.mappings():
            by_campaign.setdefault(row["campaign_id"], []).append(_position_from_row(row))
        return by_campaign

    async def taken_campaign_ids(self, bases: Collection[str]) -> set[str]:
        """Human ids already used by campaigns whose id starts with one of these `{symbol}-{date}` bases."""
        if not bases:
            return set()
        rows = await self.connection.execute(
            select(campaigns.c.campaign_id).where(campaigns.c.campaign_id_base.in_(list(bases)))
        )
        return set(rows.scalars())

    async def insert_campaigns(self, new: Iterable[Campaign]) -> None:
        rows = [_campaign_row(c) for c in new]
        if rows:
            await self.connection.execute(insert(campaigns), rows)

    async def update_campaigns(self, changed: Iterable[Campaign], loaded_versions: Mapping[UUID, int]) -> None:
        """Writes each campaign's new state if it still has the version we read; else VersionConflict."""
        rows = [_campaign_row(c) for c in changed]
        if not rows:
            return
        columns = [
            "status", "phase", "total_risk", "total_allocation", "current_risk", "weighted_avg_entry",
            "total_shares", "total_pnl", "completed_at", "invalidation_reason", "version", "updated_at",
        ]  # fmt: skip
        types = {
            "status": "text", "phase": "text", "total_risk": "numeric", "total_allocation": "numeric",
            "current_risk": "numeric", "weighted_avg_entry": "numeric", "total_shares": "numeric",
            "total_pnl": "numeric", "completed_at": "timestamptz", "invalidation_reason": "text",
            "version": "int", "updated_at": "timestamptz",
        }  # fmt: skip
        params: dict[str, Any] = {c: [row[c] for row in rows] for c in columns}
        params["ids"] = [row["id"] for row in rows]
        params["expected"] = [loaded_versions[row["id"]] for row in rows]
        unnest_args = ", ".join(f"CAST(:{c} AS {types[c]}[])" for c in columns)
        result = await self.connection.execute(
            text(
                f"UPDATE campaigns c SET {', '.join(f'{col} = v.{col}' for col in columns)}"
                f" FROM unnest(CAST(:ids AS uuid[]), CAST(:expected AS int[]), {unnest_args})"
                f" AS v(id, expected_version, {', '.join(columns)})"
                " WHERE c.id = v.id AND c.version = v.expected_version"
                " RETURNING c.id"
            ),
            params,
        )
        updated = set(result.scalars())
        if len(updated) != len(rows):
            missing = [row["campaign_id"] for row in rows if row["id"] not in updated]
            raise VersionConflict(f"campaigns changed concurrently: {', '.join(missing)}")

    async def insert_positions(self, positions: Iterable[tuple[UUID, CampaignPosition]]) -> None:
        rows = [_position_row(campaign_id, p) for campaign_id, p in positions]
        if rows:
            await self.connection.execute(insert(campaign_positions), rows)

    # --- outbox ------------------------------------------------------------------------------------------------

    async def append_to_outbox(self, messages: Iterable[OutboxMessage]) -> None:
        rows = [
            {
                "event_id": m.event_id,
                "topic": m.topic,
                "message_key": m.key,
                "payload": m.payload,
                "header_names": list(m.headers),
                "header_values": list(m.headers.values()),
                "aggregate_id": m.aggregate_id,
            }
            for m in messages
        ]
        if rows:
            await self.connection.execute(insert(outbox), rows)
            # Wakes the relay of whichever worker holds the relay lock; delivered at commit.
            await self.connection.execute(text("SELECT pg_notify('campaign_outbox', '')"))


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
            yield CampaignStore(connection)

    async def dispose(self) -> None:
        await self.engine.dispose()
