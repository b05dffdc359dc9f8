"""Set-based reads and writes of campaigns, signals, offsets and the outbox, inside one transaction.

`Database.transaction()` is the unit of work: every method of the `CampaignStore` it yields runs on the same
connection, and nothing is visible to anyone until the block commits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from campaign_manager.contracts import DocumentCache, to_json
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


class VersionConflict(Exception):
    """Another writer changed a campaign between our read and our write."""


@dataclass(frozen=True)
class OutboxMessage:
    """A record to publish once the unit of work commits: a campaign event, or a dead letter."""

    topic: str
    key: bytes | None
    payload: bytes
    # Campaign events: the relay derives their headers from these.
    event_id: UUID | None = None
    event_type: str | None = None
    occurred_at: datetime | None = None
    aggregate_id: UUID | None = None
    # Dead letters: the original headers plus the x-dlq-* ones.
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ProcessedMessage:
    """A position or range event applied (or refused): what makes its redelivery change nothing."""

    topic: str
    message_id: UUID
    outcome: str
    campaign_id: UUID | None
    reason: str | None


@dataclass(frozen=True)
class PositionHistoryEntry:
    """One fill or exit of a position, as `position_history` keeps it."""

    position_id: UUID
    campaign_id: UUID
    message_id: UUID
    event_type: str  # FILLED | PARTIALLY_CLOSED | CLOSED | STOPPED
    price: Decimal
    shares: Decimal
    realized_pnl: Decimal
    occurred_at: datetime


@dataclass(frozen=True)
class TradingRangeState:
    """A range's levels and status as a `trading-ranges` event leaves them."""

    id: UUID
    symbol: str
    timeframe: str
    start_time: datetime
    creek: Decimal
    ice: Decimal
    jump: Decimal
    phase: str
    status: str  # ACTIVE | INVALIDATED
    invalidation_reason: str | None


@dataclass(frozen=True)
class CampaignStops:
    """An open campaign as a market price first sees it (`CampaignStore.open_campaign_stops`)."""

    campaign_id: UUID
    symbol: str
    # When prices last marked it to market (None: never): the store's pace of price writes, not campaign state.
    marked_to_market_at: datetime | None
    # The highest stop of its open positions (None: none open). Whatever stop the campaign's invalidation level
    # is, it is at most this one: a price above it cannot break the campaign.
    highest_open_stop: Decimal | None


@dataclass(frozen=True)
class ProcessedSignal:
    signal_id: UUID
    outcome: str
    campaign_id: UUID | None
    reason: str | None
    source_topic: str
    source_partition: int
    source_offset: int


@dataclass(frozen=True)
class SignalBatchKeys:
    """What a batch of trade signals reads and locks, each key once (`CampaignStore.signal_batch_state`)."""

    partitions: Collection[int]
    signal_ids: Collection[UUID]
    portfolio_ids: Collection[str]
    campaign_keys: Collection[CampaignKey]
    human_id_bases: Collection[str]  # `{symbol}-{date}` of the campaigns the batch may open
    range_ids: Collection[UUID]


@dataclass(frozen=True)
class SignalBatchState:
    """What the database holds for a batch of trade signals, locked where it says so, until the batch commits."""

    stored_offsets: dict[int, int]  # partition -> next unapplied offset (locked)
    processed_signal_ids: set[UUID]
    open_risk: dict[str, Decimal]  # portfolio -> current risk of its open campaigns (portfolio locked)
    open_campaigns: dict[CampaignKey, Campaign]  # (locked)
    taken_campaign_ids: set[str]
    invalidated_ranges: dict[UUID, str]  # range -> why it was invalidated


_CAMPAIGN_COLUMNS = [c.name for c in campaigns.columns if c.name not in ("campaign_id_base", "marked_to_market_at")]
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


_CAMPAIGN_CHANGING = [
    "status", "phase", "total_risk", "total_allocation", "current_risk", "weighted_avg_entry", "total_shares",
    "total_pnl", "realized_pnl", "unrealized_pnl", "completed_at", "invalidation_reason", "version", "updated_at",
]  # fmt: skip
_POSITION_CHANGING = [
    "entry_date", "entry_price", "shares", "stop_loss", "target_price", "current_price", "current_pnl", "status",
    "allocation_percent", "risk_amount", "updated_at", "entry_shares", "realized_pnl", "exit_price", "filled_at",
    "closed_at",
]  # fmt: skip
_RANGE_COLUMNS = ["id", "symbol", "timeframe", "start_time", "creek", "ice", "jump", "phase"]
_PROCESSED_COLUMNS = [
    "signal_id", "outcome", "campaign_id", "reason", "source_topic", "source_partition", "source_offset",
]  # fmt: skip
_MESSAGE_COLUMNS = ["topic", "message_id", "outcome", "campaign_id", "reason"]
_HISTORY_COLUMNS = [
    "position_id", "campaign_id", "message_id", "event_type", "price", "shares", "realized_pnl", "occurred_at",
]  # fmt: skip
_OUTBOX_TYPES = {
    "event_id": "uuid", "topic": "text", "message_key": "bytea", "payload": "bytea", "headers": "jsonb",
    "event_type": "text", "occurred_at": "timestamptz", "aggregate_id": "uuid",
}  # fmt: skip
# The write statement's parameters, in order: JSON arrays of documents, then plain arrays and scalars.
_WRITE_PARAMETERS = [
    "ranges", "range_events", "new_campaigns", "changed_campaigns", "processed_signals", "processed_messages",
    "new_positions", "changed_positions", "position_history", "new_campaign_ranges", "changed_ids",
    "expected_versions", "marked_to_market_at", *(f"outbox_{name}" for name in _OUTBOX_TYPES), "partitions",
    "next_offsets", "consumer_group", "topic",
]  # fmt: skip
# `{symbol}-{date}-2` -> `{symbol}-{date}`
_HUMAN_ID_SUFFIX = r"(\d{4}-\d{2}-\d{2})-\d+$"


def _columns(names: Iterable[str], prefix: str = "r.") -> str:
    return ", ".join(prefix + name for name in names)


def _batch_write_sql() -> str:
    """Every write of a batch as one statement of data-modifying CTEs: one round trip instead of a dozen.

    Ranges, campaigns, positions and the other records arrive as JSON arrays of their documents (for campaigns and
    positions, the same bytes the events carry) and PostgreSQL expands them into rows with `json_populate_recordset`:
    one parse in C instead of a Python conversion per column and row. Foreign keys are checked when the whole
    statement ends, so children may reference parents inserted beside them. No two parts touch the same row.
    """

    def p(name: str) -> str:
        return f"${_WRITE_PARAMETERS.index(name) + 1}"

    def rows(table: str, parameter: str) -> str:
        return f"json_populate_recordset(NULL::{table}, {p(parameter)}::text::json) r"

    outbox_arrays = ", ".join(f"{p('outbox_' + name)}::{pg_type}[]" for name, pg_type in _OUTBOX_TYPES.items())
    return f"""
        WITH ranges AS (
            INSERT INTO trading_ranges ({_columns(_RANGE_COLUMNS, "")})
            SELECT {_columns(_RANGE_COLUMNS)} FROM {rows("trading_ranges", "ranges")}
            ON CONFLICT (id) DO UPDATE SET creek = EXCLUDED.creek, ice = EXCLUDED.ice, jump = EXCLUDED.jump,
                phase = EXCLUDED.phase, updated_at = now()
            -- Most signals repeat the levels already stored: skip those row writes.
            WHERE (trading_ranges.creek, trading_ranges.ice, trading_ranges.jump, trading_ranges.phase)
                IS DISTINCT FROM (EXCLUDED.creek, EXCLUDED.ice, EXCLUDED.jump, EXCLUDED.phase)
        ), range_events AS (
            INSERT INTO trading_ranges ({_columns(_RANGE_COLUMNS, "")}, status, invalidation_reason)
            SELECT {_columns(_RANGE_COLUMNS)}, r.status, r.invalidation_reason
            FROM {rows("trading_ranges", "range_events")}
            ON CONFLICT (id) DO UPDATE SET creek = EXCLUDED.creek, ice = EXCLUDED.ice, jump = EXCLUDED.jump,
                phase = EXCLUDED.phase, status = EXCLUDED.status, invalidation_reason = EXCLUDED.invalidation_reason,
                updated_at = now()
        ), range_locks AS (
            -- A new campaign's range, key-share locked: a range invalidation holds its range FOR UPDATE from before
            -- it looks for open campaigns until it commits, so this waits for it and then sees the new status.
            -- One index probe per range (LATERAL with a lock is never turned into a join that could scan them all).
            -- The range ids come as their own array: reading them from the campaigns' JSON parsed it twice.
            SELECT t.id, t.status
            FROM unnest({p("new_campaign_ranges")}::uuid[]) AS n(trading_range_id)
            CROSS JOIN LATERAL (SELECT t.id, t.status FROM trading_ranges t WHERE t.id = n.trading_range_id
                FOR KEY SHARE) AS t
        ), new_campaigns AS (
            -- campaign_id_base: the human id without its -2, -3 suffix, so the next suffix is one lookup away.
            INSERT INTO campaigns ({_columns(_CAMPAIGN_COLUMNS, "")}, campaign_id_base)
            SELECT {_columns(_CAMPAIGN_COLUMNS)}, regexp_replace(r.campaign_id, '{_HUMAN_ID_SUFFIX}', '\\1')
            FROM {rows("campaigns", "new_campaigns")}
        ), changed AS (
            UPDATE campaigns c SET ({_columns(_CAMPAIGN_CHANGING, "")}) = ({_columns(_CAMPAIGN_CHANGING)}),
                marked_to_market_at = COALESCE(e.marked_to_market_at, c.marked_to_market_at)
            FROM {rows("campaigns", "changed_campaigns")}
            JOIN unnest({p("changed_ids")}::uuid[], {p("expected_versions")}::int[],
                {p("marked_to_market_at")}::timestamptz[]) AS e(id, expected_version, marked_to_market_at)
                ON e.id = r.id
            WHERE c.id = r.id AND c.version = e.expected_version RETURNING c.id
        ), processed AS (
            INSERT INTO processed_signals ({_columns(_PROCESSED_COLUMNS, "")})
            SELECT {_columns(_PROCESSED_COLUMNS)} FROM {rows("processed_signals", "processed_signals")}
        ), processed_messages AS (
            INSERT INTO processed_messages ({_columns(_MESSAGE_COLUMNS, "")})
            SELECT {_columns(_MESSAGE_COLUMNS)} FROM {rows("processed_messages", "processed_messages")}
        ), new_positions AS (
            INSERT INTO campaign_positions ({_columns(_POSITION_COLUMNS, "")}, campaign_id)
            SELECT {_columns(_POSITION_COLUMNS)}, r.campaign_id FROM {rows("campaign_positions", "new_positions")}
        ), changed_positions AS (
            UPDATE campaign_positions p SET ({_columns(_POSITION_CHANGING, "")}) = ({_columns(_POSITION_CHANGING)})
            FROM {rows("campaign_positions", "changed_positions")} WHERE p.position_id = r.position_id
        ), position_history AS (
            INSERT INTO position_history ({_columns(_HISTORY_COLUMNS, "")})
            SELECT {_columns(_HISTORY_COLUMNS)} FROM {rows("position_history", "position_history")}
        ), messages AS (
            INSERT INTO outbox ({_columns(_OUTBOX_TYPES, "")})
            SELECT {_columns(_OUTBOX_TYPES, "v.")} FROM unnest({outbox_arrays}) AS v({_columns(_OUTBOX_TYPES, "")})
            RETURNING id
        ), pending AS (
            INSERT INTO outbox_pending (id) SELECT id FROM messages
        ), offsets AS (
            UPDATE consumer_offsets o SET next_offset = GREATEST(o.next_offset, v.next_offset), updated_at = now()
            FROM unnest({p("partitions")}::int[], {p("next_offsets")}::bigint[]) AS v(partition, next_offset)
            WHERE o.consumer_group = {p("consumer_group")} AND o.topic = {p("topic")} AND o.partition = v.partition
        )
        SELECT ARRAY(SELECT id FROM changed) AS changed_ids,
            ARRAY(SELECT id FROM range_locks WHERE status = 'INVALIDATED') AS invalidated_ranges,
            -- Wakes the relay of whichever worker holds the relay lock; delivered at commit.
            CASE WHEN EXISTS (SELECT FROM messages) THEN pg_notify('campaign_outbox', '') END AS notified
    """


_BATCH_WRITE = _batch_write_sql()


def _json_array(documents: Iterable[bytes]) -> str:
    return (b"[" + b",".join(documents) + b"]").decode()


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
    # --- the lifecycle's writes ---
    # Levels and status of ranges named by `trading-ranges` events.
    range_events: Iterable[TradingRangeState] = ()
    changed_positions: Iterable[CampaignPosition] = ()
    position_history: Iterable[PositionHistoryEntry] = ()
    processed_messages: Iterable[ProcessedMessage] = ()
    # Changed campaigns whose CampaignMarkedToMarket event this batch writes, and when.
    marked_to_market_at: Mapping[UUID, datetime] = field(default_factory=dict)
    # The unit of work's JSON of campaigns and positions: rows are written from the bytes events already use.
    documents: DocumentCache = field(default_factory=DocumentCache)


class CampaignStore:
    """The signal path's reads and writes, on the unit of work's connection.

    Statements go straight to asyncpg, with one array parameter per column: SQLAlchemy's per-row parameter
    processing cost more than the database work itself at thousands of rows a second. Lookups by many keys join
    `unnest($1::type[])` rather than `= ANY($1)`: under a prepared statement's generic plan, ANY over a parameter
    array scans the whole table comparing every row to every key. Lookups in tables that grow with every message
    are a LATERAL index probe per key, fenced with OFFSET 0: a plain join is planned from the statistics, and until
    autovacuum first analyzes a young table the planner may hash all of it for every batch."""

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

    async def signal_batch_state(self, consumer_group: str, topic: str, keys: SignalBatchKeys) -> SignalBatchState:
        """Every read and lock a batch of trade signals needs, in one round trip (`signal_batch_state` in the
        database runs them in order): stored offsets locked, signal ids already processed, portfolios locked with
        their open risk, open campaigns locked with their positions, human ids taken, ranges invalidated."""
        campaign_keys = sorted(keys.campaign_keys)
        row = await self.db.fetchrow(
            "SELECT * FROM signal_batch_state($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            consumer_group,
            topic,
            sorted(keys.partitions),
            list(keys.signal_ids),
            sorted(keys.portfolio_ids),
            [portfolio_id for portfolio_id, _ in campaign_keys],
            [range_id for _, range_id in campaign_keys],
            list(keys.human_id_bases),
            list(keys.range_ids),
        )
        positions: dict[UUID, list[CampaignPosition]] = {}
        for position in row["open_positions"] or ():
            positions.setdefault(position["campaign_id"], []).append(position_from_row(position))
        campaigns_found = [campaign_from_row(c, positions.get(c["id"], [])) for c in row["open_campaigns"] or ()]
        return SignalBatchState(
            stored_offsets=dict(zip(row["stored_partitions"] or (), row["stored_offsets"] or (), strict=True)),
            processed_signal_ids=set(row["processed_signal_ids"] or ()),
            open_risk=dict(zip(row["risk_portfolio_ids"] or (), row["open_risks"] or (), strict=True)),
            open_campaigns={(c.portfolio_id, c.trading_range_id): c for c in campaigns_found},
            taken_campaign_ids=set(row["taken_campaign_ids"] or ()),
            invalidated_ranges=dict(
                zip(row["invalidated_range_ids"] or (), row["invalidation_reasons"] or (), strict=True)
            ),
        )

    # --- campaigns ---------------------------------------------------------------------------------------------

    async def lock_campaigns(self, campaign_ids: Collection[UUID]) -> dict[UUID, Campaign]:
        """These campaigns, whatever their status, with their positions, row-locked until commit."""
        if not campaign_ids:
            return {}
        found = await self._lock_campaigns("JOIN unnest($1::uuid[]) AS k(id) USING (id)", list(campaign_ids))
        return {c.id: c for c in found}

    async def lock_open_campaigns_of_ranges(self, range_ids: Collection[UUID]) -> list[Campaign]:
        """Every open campaign (of any portfolio) in these trading ranges, row-locked until commit."""
        if not range_ids:
            return []
        return await self._lock_campaigns(
            "JOIN unnest($1::uuid[]) AS k(trading_range_id) USING (trading_range_id)"
            " WHERE c.status IN ('ACTIVE', 'MARKUP')",
            list(range_ids),
        )

    async def lock_open_campaigns_of_symbols(self, symbols: Collection[str]) -> list[Campaign]:
        """Every open campaign of these symbols, row-locked until commit."""
        if not symbols:
            return []
        return await self._lock_campaigns(
            "JOIN unnest($1::text[]) AS k(symbol) USING (symbol) WHERE c.status IN ('ACTIVE', 'MARKUP')",
            list(symbols),
        )

    async def open_campaign_stops(self, symbols: Collection[str]) -> list[CampaignStops]:
        """What a batch of prices must know of every open campaign of these symbols to tell which ones it may
        change, without loading or locking them: three columns per campaign instead of every campaign and
        position column (reading those for every campaign of every batch cost more than the rest of the batch)."""
        if not symbols:
            return []
        rows = await self.db.fetch(
            "SELECT c.id, c.symbol, c.marked_to_market_at,"
            " (SELECT max(p.stop_loss) FROM campaign_positions p WHERE p.campaign_id = c.id AND p.status <> 'CLOSED')"
            " FROM campaigns c JOIN unnest($1::text[]) AS k(symbol) USING (symbol)"
            " WHERE c.status IN ('ACTIVE', 'MARKUP')",
            list(symbols),
        )
        return [CampaignStops(*row) for row in rows]

    async def campaign_uuid(self, id_or_human_id: str) -> UUID | None:
        """The UUID of the campaign named by its UUID or its human id (`AAPL-2024-10-15`); None if none is."""
        if "\x00" in id_or_human_id:  # text cannot hold NUL: no campaign is named so, and the driver would raise
            return None
        try:
            return UUID(id_or_human_id)
        except ValueError:
            return await self.db.fetchval("SELECT id FROM campaigns WHERE campaign_id = $1", id_or_human_id)

    # --- trading ranges ----------------------------------------------------------------------------------------

    async def trading_ranges(self, range_ids: Collection[UUID], *, lock: bool = False) -> dict[UUID, TradingRangeState]:
        """The stored levels and status of these ranges (unknown ids are absent); `lock`: row-locked until commit.

        A range event locks its ranges before it looks for their open campaigns: see `range_locks` in the write."""
        if not range_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT t.* FROM trading_ranges t JOIN unnest($1::uuid[]) AS k(id) USING (id)"
            + (" ORDER BY t.id FOR UPDATE OF t" if lock else ""),
            list(range_ids),
        )
        return {
            row["id"]: TradingRangeState(**{name: row[name] for name in TradingRangeState.__dataclass_fields__})
            for row in rows
        }

    async def _lock_campaigns(self, join_and_where: str, *parameters: Any) -> list[Campaign]:
        # In id order, so that writers locking overlapping sets never deadlock.
        rows = await self.db.fetch(
            f"SELECT c.* FROM campaigns c {join_and_where} ORDER BY c.id FOR UPDATE OF c", *parameters
        )
        positions = await self.positions_of([row["id"] for row in rows])
        return [campaign_from_row(row, positions.get(row["id"], [])) for row in rows]

    async def processed_message_ids(self, topic: str, message_ids: Collection[UUID]) -> set[UUID]:
        """Which of these position or range event ids were applied (or refused) before."""
        if not message_ids:
            return set()
        rows = await self.db.fetch(
            "SELECT m.message_id FROM unnest($2::uuid[]) AS k(message_id) CROSS JOIN LATERAL"
            " (SELECT m.message_id FROM processed_messages m WHERE m.topic = $1 AND m.message_id = k.message_id"
            " OFFSET 0) m",
            topic,
            list(message_ids),
        )
        return {row["message_id"] for row in rows}

    async def positions_of(self, campaign_ids: list[UUID]) -> dict[UUID, list[CampaignPosition]]:
        by_campaign: dict[UUID, list[CampaignPosition]] = {}
        if not campaign_ids:
            return by_campaign
        rows = await self.db.fetch(
            "SELECT p.* FROM unnest($1::uuid[]) AS k(campaign_id) CROSS JOIN LATERAL"
            " (SELECT * FROM campaign_positions p WHERE p.campaign_id = k.campaign_id OFFSET 0) p"
            " ORDER BY p.created_at, p.position_id",
            campaign_ids,
        )
        for row in rows:
            by_campaign.setdefault(row["campaign_id"], []).append(position_from_row(row))
        return by_campaign

    # --- replaying history (`campaign-manager rebuild`) -----------------------------------------------------------

    async def campaigns_after(self, after: UUID, limit: int) -> list[Campaign]:
        """The next `limit` campaigns in id order after `after` (keyset paging on the primary key: every page costs
        the same, however far in), with their positions. Nothing is locked."""
        rows = await self.db.fetch("SELECT c.* FROM campaigns c WHERE c.id > $1 ORDER BY c.id LIMIT $2", after, limit)
        positions = await self.positions_of([row["id"] for row in rows])
        return [campaign_from_row(row, positions.get(row["id"], [])) for row in rows]

    async def position_history(self, position_ids: Collection[UUID]) -> dict[UUID, list[PositionHistoryEntry]]:
        """The fills and exits of these positions, each position's in the order they were applied."""
        by_position: dict[UUID, list[PositionHistoryEntry]] = {}
        if not position_ids:
            return by_position
        rows = await self.db.fetch(
            f"SELECT {_columns(_HISTORY_COLUMNS, 'h.')} FROM position_history h"
            " JOIN unnest($1::uuid[]) AS k(position_id) USING (position_id) ORDER BY h.id",
            list(position_ids),
        )
        for row in rows:
            by_position.setdefault(row["position_id"], []).append(PositionHistoryEntry(**row))
        return by_position

    # --- writing ---------------------------------------------------------------------------------------------

    async def write(self, batch: BatchWrite) -> None:
        """Ranges, campaigns (new and changed), processed signals, positions, outbox and offsets, in one statement.

        A changed campaign is written only if it still has the version we read; else VersionConflict."""
        documents = batch.documents
        # One row per range, in id order so that concurrent writers lock them in the same order.
        ranges = sorted({r.id: r for r in batch.trading_ranges}.values(), key=lambda r: r.id)
        new_campaigns = list(batch.new_campaigns)
        changed = sorted(batch.changed_campaigns, key=lambda c: c.id)
        positions_by_campaign = {p.position_id: c.id for c in changed for p in c.positions}
        new_positions = [
            b'{"campaign_id":"%s",%s' % (str(campaign_id).encode(), documents.position(p)[1:])
            for campaign_id, p in batch.positions
        ]
        changed_positions = [
            b'{"campaign_id":"%s",%s' % (str(positions_by_campaign[p.position_id]).encode(), documents.position(p)[1:])
            for p in sorted(batch.changed_positions, key=lambda p: p.position_id)
        ]
        outbox = list(batch.outbox)
        arguments = {
            "ranges": to_json(ranges).decode(),
            "range_events": to_json(sorted(batch.range_events, key=lambda r: r.id)).decode(),
            "new_campaigns": _json_array(documents.campaign(c) for c in new_campaigns),
            "new_campaign_ranges": sorted({c.trading_range_id for c in new_campaigns}),
            "changed_campaigns": _json_array(documents.campaign(c) for c in changed),
            "changed_ids": [c.id for c in changed],
            "expected_versions": [batch.loaded_versions[c.id] for c in changed],
            "marked_to_market_at": [batch.marked_to_market_at.get(c.id) for c in changed],
            "processed_signals": to_json(list(batch.processed)).decode(),
            "processed_messages": to_json(list(batch.processed_messages)).decode(),
            "new_positions": _json_array(new_positions),
            "changed_positions": _json_array(changed_positions),
            "position_history": to_json(list(batch.position_history)).decode(),
            "outbox_event_id": [m.event_id for m in outbox],
            "outbox_topic": [m.topic for m in outbox],
            "outbox_message_key": [m.key for m in outbox],
            "outbox_payload": [m.payload for m in outbox],
            "outbox_headers": [None if m.headers is None else to_json(m.headers).decode() for m in outbox],
            "outbox_event_type": [m.event_type for m in outbox],
            "outbox_occurred_at": [m.occurred_at for m in outbox],
            "outbox_aggregate_id": [m.aggregate_id for m in outbox],
            "partitions": list(batch.next_offsets),
            "next_offsets": list(batch.next_offsets.values()),
            "consumer_group": batch.consumer_group,
            "topic": batch.topic,
        }
        row = await self.db.fetchrow(_BATCH_WRITE, *(arguments[name] for name in _WRITE_PARAMETERS))
        if row["invalidated_ranges"]:
            # Invalidated while this batch ran: retried from a fresh read, where the signals are rejected.
            raise VersionConflict(f"trading ranges invalidated concurrently: {row['invalidated_ranges']}")
        if len(row["changed_ids"]) != len(changed):
            written = set(row["changed_ids"])
            missing = [c.campaign_id for c in changed if c.id not in written]
            raise VersionConflict(f"campaigns changed concurrently: {', '.join(missing)}")


class KeptConnection:
    """A connection one consumer keeps from one transaction to the next, as a unit of work like
    `Database.transaction()`: a batch then pays no pool checkout and no liveness ping (three round trips).

    After an error that may have broken it (anything but a statement the server refused, or a lost race), it is
    dropped, and the next transaction checks out a fresh one, pinged by the pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CampaignStore]:
        fresh = self._connection is None
        if fresh:
            self._connection = await self.engine.connect()
        connection = self._connection
        try:
            driver = (await connection.get_raw_connection()).driver_connection
            if fresh:
                # The batch statements are written to plan well without their parameters' values (LATERAL probes,
                # unnest joins), and those inside signal_batch_state were otherwise planned anew at every call:
                # ~0.35 ms of a 3 ms batch of 7 signals.
                await driver.execute("SET plan_cache_mode = force_generic_plan")
            async with driver.transaction():
                yield CampaignStore(driver)
        except BaseException as error:
            if not _leaves_connection_usable(error):
                self._connection = None
                await _discard(connection)
            raise

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await _discard(connection)


def _leaves_connection_usable(error: BaseException) -> bool:
    if isinstance(error, VersionConflict):
        return True
    # The server answered (and the transaction was rolled back), unless it is closing the session: 08 connection
    # exception, 57 operator intervention (shutdown, terminated backend).
    return isinstance(error, asyncpg.PostgresError) and not str(error.sqlstate or "").startswith(("08", "57"))


async def _discard(connection: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._kept: list[KeptConnection] = []

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
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[CampaignStore]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        The pool is SQLAlchemy's; the transaction is the driver's own, so that BEGIN and COMMIT are the only round
        trips it adds (SQLAlchemy's begin costs one more, and every statement here goes to the driver anyway).
        `isolation` (asyncpg's name, e.g. "repeatable_read"; default: the server's) and `readonly` are for readers
        that need several statements to see one snapshot."""
        async with self.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            async with driver.transaction(isolation=isolation, readonly=readonly):
                yield CampaignStore(driver)

    def kept_connection(self) -> KeptConnection:
        """A connection for one consumer's transactions, closed by `dispose`."""
        kept = KeptConnection(self.engine)
        self._kept.append(kept)
        return kept

    async def dispose(self) -> None:
        for kept in self._kept:
            await kept.close()
        await self.engine.dispose()
