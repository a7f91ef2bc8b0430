"""issue 11: kelurahan relays confirm they passed an announcement on

One row per (message, relay endpoint) once the relay confirms or is reminded (``hub.relays``); an index on
``deliveries.provider_id`` finds the delivery a Matrix reaction names. A paused relay keeps using
``endpoints.active`` with ``deactivated_reason = 'paused by staff'`` (no new column).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relay_acks",
        sa.Column("id", BigId, nullable=False),
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("endpoint_id", BigId, nullable=False),
        sa.Column("delivery_id", BigId, nullable=False),
        sa.Column("announcement_id", BigId, nullable=True),
        sa.Column("office_id", sa.String(64), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("means", sa.String(20), nullable=True),
        sa.Column("confirmed_by", sa.String(64), nullable=True),
        sa.Column("confirmed_via", sa.String(16), nullable=True),
        sa.Column("reminded_at", sa.DateTime(), nullable=True),
        sa.Column("reminder_message_id", BigId, nullable=True),
        sa.Column("office_told_at", sa.DateTime(), nullable=True),
        sa.Column("report_message_id", BigId, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", "endpoint_id", name="uq_relay_ack"),
    )
    op.create_index("ix_relay_acks_endpoint_id", "relay_acks", ["endpoint_id"])
    op.create_index("ix_relay_acks_announcement", "relay_acks", ["announcement_id"])
    op.create_index("ix_relay_acks_report", "relay_acks", ["office_told_at", "confirmed_at", "message_id"])
    op.create_index("ix_relay_acks_reminder_message", "relay_acks", ["reminder_message_id"])
    op.create_index("ix_deliveries_provider_id", "deliveries", ["provider_id"])
    op.create_index("ix_endpoints_relay_office_id", "endpoints", ["relay_office_id"])


def downgrade() -> None:
    op.drop_index("ix_endpoints_relay_office_id", table_name="endpoints")
    op.drop_index("ix_deliveries_provider_id", table_name="deliveries")
    op.drop_table("relay_acks")
