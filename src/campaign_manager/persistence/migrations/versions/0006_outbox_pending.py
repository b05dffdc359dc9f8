"""Outbox: what is still to publish is a queue of ids of its own; published rows are never written again.

The relay used to stamp `published_at` on each outbox row it had sent. Rows carry the event (~2.5 kB) and the
stamp changed a column of a partial index, so every stamp wrote a whole new row version, its index entries and
~2.9 kB of WAL. Now the write that adds a message also adds its id to `outbox_pending`, and the relay deletes the
ids it has sent: ~0.2 kB of WAL a message, and the outbox is append-only.

Stop workers of the previous version before upgrading: their relay stamps the column this drops.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE outbox_pending (id BIGINT PRIMARY KEY)")
    op.execute("INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL")
    op.execute("DROP INDEX idx_outbox_unpublished")
    op.execute("ALTER TABLE outbox DROP COLUMN published_at")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox ADD COLUMN published_at TIMESTAMPTZ")
    # When each was published is not known: its creation time stands in.
    op.execute(
        "UPDATE outbox o SET published_at = o.created_at"
        " WHERE NOT EXISTS (SELECT FROM outbox_pending p WHERE p.id = o.id)"
    )
    op.execute("CREATE INDEX idx_outbox_unpublished ON outbox (id) WHERE published_at IS NULL")
    op.execute("DROP TABLE outbox_pending")
