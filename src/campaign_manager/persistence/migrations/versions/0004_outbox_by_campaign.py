"""Outbox: an index of each campaign's events, in order, for the campaign's history (`GET .../events`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Dead letters and rejections without a campaign have no aggregate: they are never asked for by campaign.
    op.execute("CREATE INDEX idx_outbox_campaign ON outbox (aggregate_id, id) WHERE aggregate_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX idx_outbox_campaign")
