"""issue 11: each office's base status (hours, quota, mode, services, contacts) and its history;
when an announcement was cancelled (feeds and CAP Cancel documents show it)

``hub.status`` validates the JSON; announcements overlay it for their validity period without touching
these rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "office_status",
        sa.Column("office_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(["office_id"], ["offices.id"]),
        sa.PrimaryKeyConstraint("office_id"),
    )
    op.create_table(
        "office_status_history",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("office_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(length=320), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("office_status_history", schema=None) as batch_op:
        batch_op.create_index("ix_office_status_history_office_id_id", ["office_id", "id"], unique=False)
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(), nullable=True))
        # Which announcements correct one: every public page and feed asks, per announcement shown.
        batch_op.create_index("ix_announcements_corrects_id", ["corrects_id"], unique=False)
    # hub.freshness: the stamp public pages watch (a new value whenever what they show changes).
    op.execute("INSERT INTO hub_kv (key, value) VALUES ('public_stamp', '0')")


def downgrade() -> None:
    op.execute("DELETE FROM hub_kv WHERE key = 'public_stamp'")
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.drop_index("ix_announcements_corrects_id")
        batch_op.drop_column("cancelled_at")
    op.drop_table("office_status_history")
    op.drop_table("office_status")
