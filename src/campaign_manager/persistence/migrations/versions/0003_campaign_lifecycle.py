"""The whole campaign lifecycle: fills, exits and prices on positions, their history, range invalidation,
portfolios (the heat limit's lock), and idempotency of the non-signal messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# One statement per execute: asyncpg prepares each statement and refuses several in one.
STATEMENTS = """
        ALTER TABLE campaigns
            ADD COLUMN realized_pnl NUMERIC(12,2) NOT NULL DEFAULT 0.00,
            ADD COLUMN unrealized_pnl NUMERIC(12,2) NOT NULL DEFAULT 0.00,
            ADD COLUMN portfolio_value NUMERIC(16,2),
            -- When the last CampaignMarkedToMarket event was written: prices publish it at most once an interval.
            ADD COLUMN marked_to_market_at TIMESTAMPTZ;
        CREATE INDEX idx_campaigns_open_by_symbol ON campaigns (symbol) WHERE status IN ('ACTIVE', 'MARKUP');

        ALTER TABLE campaign_positions
            ADD COLUMN entry_shares NUMERIC(18,8),
            ADD COLUMN realized_pnl NUMERIC(12,2) NOT NULL DEFAULT 0.00,
            ADD COLUMN exit_price NUMERIC(18,8),
            ADD COLUMN filled_at TIMESTAMPTZ,
            ADD COLUMN closed_at TIMESTAMPTZ;
        UPDATE campaign_positions SET entry_shares = shares;
        ALTER TABLE campaign_positions ALTER COLUMN entry_shares SET NOT NULL;
        -- `shares` is what is still held: 0 once closed, never more than the entry size.
        ALTER TABLE campaign_positions DROP CONSTRAINT ck_positions_shares;
        ALTER TABLE campaign_positions
            ADD CONSTRAINT ck_positions_shares CHECK (shares >= 0 AND shares <= entry_shares);

        -- Every fill and exit of a position, in order: what `campaign-manager rebuild` replays.
        CREATE TABLE position_history (
            id BIGSERIAL PRIMARY KEY,
            position_id UUID NOT NULL REFERENCES campaign_positions(position_id) ON DELETE CASCADE,
            campaign_id UUID NOT NULL,
            message_id UUID NOT NULL,
            event_type VARCHAR(20) NOT NULL
                CONSTRAINT ck_position_history_event_type
                CHECK (event_type IN ('FILLED', 'PARTIALLY_CLOSED', 'CLOSED', 'STOPPED')),
            price NUMERIC(18,8) NOT NULL,
            shares NUMERIC(18,8) NOT NULL,
            realized_pnl NUMERIC(12,2) NOT NULL DEFAULT 0.00,
            occurred_at TIMESTAMPTZ NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX idx_position_history_position ON position_history (position_id, id);

        -- Idempotency of position events and range updates: one row per message id and topic.
        CREATE TABLE processed_messages (
            topic VARCHAR(249) NOT NULL,
            message_id UUID NOT NULL,
            outcome VARCHAR(20) NOT NULL,
            campaign_id UUID,
            reason TEXT,
            processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, message_id)
        );

        ALTER TABLE trading_ranges
            ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'ACTIVE'
                CONSTRAINT ck_trading_ranges_status CHECK (status IN ('ACTIVE', 'INVALIDATED')),
            ADD COLUMN invalidation_reason TEXT;

        -- One row per portfolio. A signal batch that adds risk locks the rows of its portfolios, so the 10% heat
        -- check is exact under racing workers while portfolios never wait on each other.
        CREATE TABLE portfolios (
            portfolio_id VARCHAR(64) PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        INSERT INTO portfolios (portfolio_id) SELECT DISTINCT portfolio_id FROM campaigns;

        -- A processed signal names its campaign for the record; the constraint cost a lookup and a row lock on
        -- the campaign for every signal, and campaigns are never deleted.
        ALTER TABLE processed_signals DROP CONSTRAINT processed_signals_campaign_id_fkey
"""


def upgrade() -> None:
    for statement in STATEMENTS.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in [
        "ALTER TABLE processed_signals ADD CONSTRAINT processed_signals_campaign_id_fkey"
        " FOREIGN KEY (campaign_id) REFERENCES campaigns(id) ON DELETE SET NULL",
        "DROP TABLE portfolios, processed_messages, position_history",
        "ALTER TABLE trading_ranges DROP COLUMN status, DROP COLUMN invalidation_reason",
        "ALTER TABLE campaign_positions DROP CONSTRAINT ck_positions_shares",
        "DELETE FROM campaign_positions WHERE shares = 0",
        "ALTER TABLE campaign_positions ADD CONSTRAINT ck_positions_shares CHECK (shares > 0)",
        "ALTER TABLE campaign_positions DROP COLUMN entry_shares, DROP COLUMN realized_pnl, DROP COLUMN exit_price,"
        " DROP COLUMN filled_at, DROP COLUMN closed_at",
        "DROP INDEX idx_campaigns_open_by_symbol",
        "ALTER TABLE campaigns DROP COLUMN realized_pnl, DROP COLUMN unrealized_pnl, DROP COLUMN portfolio_value,"
        " DROP COLUMN marked_to_market_at",
    ]:
        op.execute(statement)
