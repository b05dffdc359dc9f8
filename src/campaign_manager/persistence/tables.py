"""The tables, as SQLAlchemy Core sees them. The schema itself is created by the Alembic migrations next door;
`tests/integration/test_migrations.py` checks the two agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

MONEY = Numeric(12, 2)
PRICE = Numeric(18, 8)
ALLOCATION = Numeric(7, 4)


def _timestamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


trading_ranges = Table(
    "trading_ranges",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("symbol", String(20), nullable=False),
    Column("timeframe", String(5), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("creek", PRICE, nullable=False),
    Column("ice", PRICE, nullable=False),
    Column("jump", PRICE, nullable=False),
    Column("phase", String(1), nullable=False),
    *_timestamps(),
    Column("status", String(20), nullable=False, server_default=text("'ACTIVE'")),
    Column("invalidation_reason", Text),
    CheckConstraint("phase IN ('C', 'D', 'E')", name="ck_trading_ranges_phase"),
    CheckConstraint("status IN ('ACTIVE', 'INVALIDATED')", name="ck_trading_ranges_status"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("campaign_id", String(50), nullable=False, unique=True),
    Column("campaign_id_base", String(50), nullable=False),
    Column("portfolio_id", String(64), nullable=False),
    Column("symbol", String(20), nullable=False),
    Column("timeframe", String(5), nullable=False),
    Column("trading_range_id", Uuid, ForeignKey("trading_ranges.id", ondelete="RESTRICT"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("phase", String(1), nullable=False),
    Column("total_risk", MONEY, nullable=False),
    Column("total_allocation", ALLOCATION, nullable=False),
    Column("current_risk", MONEY, nullable=False),
    Column("weighted_avg_entry", PRICE),
    Column("total_shares", PRICE, nullable=False),
    Column("total_pnl", MONEY, nullable=False, server_default=text("0.00")),
    Column("start_date", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("invalidation_reason", Text),
    Column("version", Integer, nullable=False, server_default=text("1")),
    *_timestamps(),
    Column("realized_pnl", MONEY, nullable=False, server_default=text("0.00")),
    Column("unrealized_pnl", MONEY, nullable=False, server_default=text("0.00")),
    Column("portfolio_value", Numeric(16, 2)),
    # When the last CampaignMarkedToMarket event was written: prices publish it at most once an interval.
    Column("marked_to_market_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('ACTIVE', 'MARKUP', 'COMPLETED', 'INVALIDATED')", name="ck_campaigns_status"),
    CheckConstraint("phase IN ('C', 'D', 'E')", name="ck_campaigns_phase"),
    CheckConstraint("total_allocation >= 0 AND total_allocation <= 5.0", name="ck_campaigns_total_allocation"),
    CheckConstraint("version >= 1", name="ck_campaigns_version"),
    Index("idx_campaigns_symbol_status", "symbol", "status"),
    Index("idx_campaigns_trading_range", "trading_range_id"),
    Index("idx_campaigns_campaign_id_base", "campaign_id_base"),
    # At most one open campaign per portfolio and trading range, whatever the workers do.
    Index(
        "uq_campaigns_open_per_portfolio_range",
        "portfolio_id",
        "trading_range_id",
        unique=True,
        postgresql_where=text("status IN ('ACTIVE', 'MARKUP')"),
    ),
    Index("idx_campaigns_open_by_symbol", "symbol", postgresql_where=text("status IN ('ACTIVE', 'MARKUP')")),
)

# Every signal the service has seen, with its outcome: the idempotency record and the audit trail.
processed_signals = Table(
    "processed_signals",
    metadata,
    Column("signal_id", Uuid, primary_key=True),
    Column("outcome", String(20), nullable=False),
    Column("campaign_id", Uuid),  # for the record; no foreign key (see migration 0003)
    Column("reason", Text),
    Column("source_topic", String(249), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("outcome IN ('CREATED', 'ADDED', 'REJECTED')", name="ck_processed_signals_outcome"),
)

campaign_positions = Table(
    "campaign_positions",
    metadata,
    Column("position_id", Uuid, primary_key=True),
    Column("campaign_id", Uuid, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column(
        "signal_id",
        Uuid,
        ForeignKey("processed_signals.signal_id", ondelete="RESTRICT"),
        nullable=False,
        unique=True,
    ),
    Column("pattern_type", String(10), nullable=False),
    Column("entry_date", DateTime(timezone=True), nullable=False),
    Column("entry_price", PRICE, nullable=False),
    Column("shares", PRICE, nullable=False),
    Column("stop_loss", PRICE, nullable=False),
    Column("target_price", PRICE, nullable=False),
    Column("current_price", PRICE, nullable=False),
    Column("current_pnl", MONEY, nullable=False),
    Column("status", String(10), nullable=False),
    Column("allocation_percent", ALLOCATION, nullable=False),
    Column("risk_amount", MONEY, nullable=False),
    *_timestamps(),
    Column("entry_shares", PRICE, nullable=False),
    Column("realized_pnl", MONEY, nullable=False, server_default=text("0.00")),
    Column("exit_price", PRICE),
    Column("filled_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    CheckConstraint("pattern_type IN ('SPRING', 'SOS', 'LPS')", name="ck_positions_pattern_type"),
    CheckConstraint("status IN ('OPEN', 'PARTIAL', 'CLOSED')", name="ck_positions_status"),
    # `shares` is what is still held: 0 once closed, never more than the entry size.
    CheckConstraint("shares >= 0 AND shares <= entry_shares", name="ck_positions_shares"),
    Index("idx_positions_campaign", "campaign_id"),
)

# Every fill and exit of a position, in order: what `campaign-manager rebuild` replays.
position_history = Table(
    "position_history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("position_id", Uuid, ForeignKey("campaign_positions.position_id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", Uuid, nullable=False),
    Column("message_id", Uuid, nullable=False),
    Column("event_type", String(20), nullable=False),
    Column("price", PRICE, nullable=False),
    Column("shares", PRICE, nullable=False),
    Column("realized_pnl", MONEY, nullable=False, server_default=text("0.00")),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "event_type IN ('FILLED', 'PARTIALLY_CLOSED', 'CLOSED', 'STOPPED')", name="ck_position_history_event_type"
    ),
    Index("idx_position_history_position", "position_id", "id"),
)

# Idempotency of position events and range updates: one row per message id and topic.
processed_messages = Table(
    "processed_messages",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("message_id", Uuid, primary_key=True),
    Column("outcome", String(20), nullable=False),
    Column("campaign_id", Uuid),
    Column("reason", Text),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per portfolio: a signal batch that adds risk locks its portfolios' rows, so the 10% heat check is exact
# under racing workers while portfolios never wait on each other.
portfolios = Table(
    "portfolios",
    metadata,
    Column("portfolio_id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The next offset to read per partition, written in the same transaction as what those records changed:
# PostgreSQL, not Kafka, decides what has been applied.
consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Messages to publish, written in the same transaction as the change they announce, and kept: a campaign's
# events are its history. Append-only: what is still to publish is in `outbox_pending`.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Uuid),
    Column("topic", String(249), nullable=False),
    Column("message_key", LargeBinary),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB),  # dead letters only; the relay derives an event's headers from the columns below
    Column("aggregate_id", Uuid),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("event_type", String(64)),
    Column("occurred_at", DateTime(timezone=True)),
    # A campaign's events in order: its history, as the API serves it.
    Index("idx_outbox_campaign", "aggregate_id", "id", postgresql_where=text("aggregate_id IS NOT NULL")),
)

# The ids of outbox messages not yet published, added by the write that adds the message. The relay sends them in
# id order and deletes the ids the broker acknowledged. No foreign key: both rows come from one statement, and the
# check would cost every write a lookup.
outbox_pending = Table(
    "outbox_pending",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
)
