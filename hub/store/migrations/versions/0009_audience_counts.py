"""issue 10: audience counts kept by the reconciler, read by the console's pages

Counting the confirmed audience of a province (820k subscriptions) takes seconds on either database; the
composer, its preview and the subscribers page read these rows instead (``hub.audience``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audience_counts",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(120), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("locale", sa.String(8), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("counted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "scope_id", "channel", "locale"),
    )


def downgrade() -> None:
    op.drop_table("audience_counts")
