"""Outbox: campaign events keep their type and time in columns, the relay derives their headers from them.

Headers stay in `headers` only for dead letters (the original record's plus the x-dlq-* ones).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE outbox ADD COLUMN event_type VARCHAR(64), ADD COLUMN occurred_at TIMESTAMPTZ")
    op.execute("ALTER TABLE outbox ALTER COLUMN headers DROP NOT NULL")


def downgrade() -> None:
    op.execute(
        "UPDATE outbox SET headers = jsonb_build_object("
        "'content-type', 'application/json', 'event-type', event_type, 'event-id', event_id::text)"
        " WHERE headers IS NULL"
    )
    op.execute("ALTER TABLE outbox ALTER COLUMN headers SET NOT NULL")
    op.execute("ALTER TABLE outbox DROP COLUMN event_type, DROP COLUMN occurred_at")
