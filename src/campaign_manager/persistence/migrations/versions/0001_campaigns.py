"""Trading ranges, campaigns, positions, processed signals, consumer offsets and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# One statement per execute: asyncpg prepares each statement and refuses several in one.
STATEMENTS = """
        CREATE TABLE trading_ranges (
            id UUID PRIMARY KEY,
            symbol VARCHAR(20) NOT NULL,
            timeframe VARCHAR(5) NOT NULL,
            start_time TIMESTAMPTZ NOT NULL,
            creek NUMERIC(18,8) NOT NULL,
            ice NUMERIC(18,8) NOT NULL,
            jump NUMERIC(18,8) NOT NULL,
            phase VARCHAR(1) NOT NULL CONSTRAINT ck_trading_ranges_phase CHECK (phase IN ('C', 'D', 'E')),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );

        CREATE TABLE campaigns (
            id UUID PRIMARY KEY,
            campaign_id VARCHAR(50) NOT NULL UNIQUE,
            campaign_id_base VARCHAR(50) NOT NULL,
            portfolio_id VARCHAR(64) NOT NULL,
            symbol VARCHAR(20) NOT NULL,
            timeframe VARCHAR(5) NOT NULL,
            trading_range_id UUID NOT NULL REFERENCES trading_ranges(id) ON DELETE RESTRICT,
            status VARCHAR(20) NOT NULL
                CONSTRAINT ck_campaigns_status CHECK (status IN ('ACTIVE', 'MARKUP', 'COMPLETED', 'INVALIDATED')),
            phase VARCHAR(1) NOT NULL CONSTRAINT ck_campaigns_phase CHECK (phase IN ('C', 'D', 'E')),
            total_risk NUMERIC(12,2) NOT NULL,
            total_allocation NUMERIC(7,4) NOT NULL
                CONSTRAINT ck_campaigns_total_allocation CHECK (total_allocation >= 0 AND total_allocation <= 5.0),
            current_risk NUMERIC(12,2) NOT NULL,
            weighted_avg_entry NUMERIC(18,8),
            total_shares NUMERIC(18,8) NOT NULL,
            total_pnl NUMERIC(12,2) NOT NULL DEFAULT 0.00,
            start_date TIMESTAMPTZ NOT NULL,
            completed_at TIMESTAMPTZ,
            invalidation_reason TEXT,
            version INTEGER NOT NULL DEFAULT 1 CONSTRAINT ck_campaigns_version CHECK (version >= 1),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX idx_campaigns_symbol_status ON campaigns (symbol, status);
        CREATE INDEX idx_campaigns_trading_range ON campaigns (trading_range_id);
        CREATE INDEX idx_campaigns_campaign_id_base ON campaigns (campaign_id_base);
        -- At most one open campaign per portfolio and trading range, whatever the workers do.
        CREATE UNIQUE INDEX uq_campaigns_open_per_portfolio_range ON campaigns (portfolio_id, trading_range_id)
            WHERE status IN ('ACTIVE', 'MARKUP');

        CREATE TABLE processed_signals (
            signal_id UUID PRIMARY KEY,
            outcome VARCHAR(20) NOT NULL
                CONSTRAINT ck_processed_signals_outcome CHECK (outcome IN ('CREATED', 'ADDED', 'REJECTED')),
            campaign_id UUID REFERENCES campaigns(id) ON DELETE SET NULL,
            reason TEXT,
            source_topic VARCHAR(249) NOT NULL,
            source_partition INTEGER NOT NULL,
            source_offset BIGINT NOT NULL,
            processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );

        CREATE TABLE campaign_positions (
            position_id UUID PRIMARY KEY,
            campaign_id UUID NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            signal_id UUID NOT NULL UNIQUE REFERENCES processed_signals(signal_id) ON DELETE RESTRICT,
            pattern_type VARCHAR(10) NOT NULL
                CONSTRAINT ck_positions_pattern_type CHECK (pattern_type IN ('SPRING', 'SOS', 'LPS')),
            entry_date TIMESTAMPTZ NOT NULL,
            entry_price NUMERIC(18,8) NOT NULL,
            shares NUMERIC(18,8) NOT NULL CONSTRAINT ck_positions_shares CHECK (shares > 0),
            stop_loss NUMERIC(18,8) NOT NULL,
            target_price NUMERIC(18,8) NOT NULL,
            current_price NUMERIC(18,8) NOT NULL,
            current_pnl NUMERIC(12,2) NOT NULL,
            status VARCHAR(10) NOT NULL
                CONSTRAINT ck_positions_status CHECK (status IN ('OPEN', 'PARTIAL', 'CLOSED')),
            allocation_percent NUMERIC(7,4) NOT NULL,
            risk_amount NUMERIC(12,2) NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX idx_positions_campaign ON campaign_positions (campaign_id);

        CREATE TABLE consumer_offsets (
            consumer_group VARCHAR(255) NOT NULL,
            topic VARCHAR(249) NOT NULL,
            partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer_group, topic, partition)
        );

        CREATE TABLE outbox (
            id BIGSERIAL PRIMARY KEY,
            event_id UUID,
            topic VARCHAR(249) NOT NULL,
            message_key BYTEA,
            payload BYTEA NOT NULL,
            headers JSONB NOT NULL,
            aggregate_id UUID,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            published_at TIMESTAMPTZ
        );
        CREATE INDEX idx_outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
        -- Events are 1-4 kB of JSON: keep them in the row, uncompressed, rather than compressing each one into
        -- TOAST (pglz) on the hot path; only rows over 8 kB go out of line.
        ALTER TABLE outbox ALTER COLUMN payload SET STORAGE MAIN;
        ALTER TABLE outbox SET (toast_tuple_target = 8160);
"""


def upgrade() -> None:
    for statement in STATEMENTS.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE outbox, consumer_offsets, campaign_positions, processed_signals, campaigns, trading_ranges")
